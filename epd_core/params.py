"""EPD predictor table as data.

``EPDParams`` holds the unconstrained logits of one table plus its sigma grid; the
values the solver uses (r, lam, c, a) come from the pure transforms below, so
optimisation stays unconstrained. Everything is float64 on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .vocab import MAX_POINTS

_F64 = torch.float64
# JSON read from files and widgets: nesting and size are capped before parsing or walking, so
# a hostile file gets a clear error, not a RecursionError or a walk over a shared-node DAG.
MAX_JSON_DEPTH = 32  # tables nest 3 levels; upstream provenance a few more
MAX_JSON_NODES = 100_000  # containers and scalars visited in a metadata mapping
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_LOGIT_NAMES = ("r_logits", "weight_logits", "scale_dir_logits", "scale_time_logits")


def interp_sigma(sigma: Any, sigma_next: Any, r: Any) -> torch.Tensor:
    """Intermediate sigma tau = sigma_next^r sigma^(1-r), §1.2; (1-r) sigma on an interval ending at 0."""
    sigma, sigma_next, r = (
        torch.as_tensor(v, dtype=_F64) if not torch.is_tensor(v) else v for v in (sigma, sigma_next, r)
    )
    positive = sigma_next > 0
    # Evaluate the geometric rule on safe values only, so no log(0) reaches autograd.
    safe_next = torch.where(positive, sigma_next, torch.ones_like(sigma_next))
    safe_sigma = torch.where(positive, sigma, torch.ones_like(sigma))
    geometric = safe_next**r * safe_sigma ** (1 - r)
    return torch.where(positive, geometric, (1 - r) * sigma)


def positions_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Positions r = sigmoid(rho), §1.1."""
    return torch.sigmoid(logits)


def weights_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Weights lam_n = softmax_k(omega_{n,k}) over the last axis, §1.1."""
    return torch.softmax(logits, dim=-1)


def scales_from_logits(logits: torch.Tensor, s: float) -> torch.Tensor:
    """Scale c = (1 - s) + 2 s sigmoid(beta / 2), §1.1 (also a from gamma); exactly 1 when s = 0."""
    return (1.0 - s) + 2.0 * s * torch.sigmoid(logits / 2)


def logits_from_positions(r: torch.Tensor) -> torch.Tensor:
    """Inverse of positions_from_logits: rho = log(r) - log(1 - r); needs r in (0, 1)."""
    return torch.log(r) - torch.log1p(-r)


def logits_from_weights(lam: torch.Tensor) -> torch.Tensor:
    """Inverse of weights_from_logits up to a per-row constant: omega = log(lam); needs lam > 0."""
    return torch.log(lam)


def logits_from_scales(values: torch.Tensor, s: float) -> torch.Tensor:
    """Inverse of scales_from_logits: beta = 2 logit((c - 1 + s) / (2 s)); zeros when s = 0 (then c must be 1)."""
    values = torch.as_tensor(values, dtype=_F64)
    if s == 0:
        if not bool((values == 1).all()):
            bad = values[values != 1].flatten()[0].item()
            raise ValueError(
                f"scale values must all be 1 when the scale range s is 0, got {bad!r}; "
                "pass a scale range s in (0, 1) (scale_dir / scale_time) or leave the scales at 1."
            )
        return torch.zeros_like(values)
    return 2.0 * logits_from_positions((values - 1.0 + s) / (2.0 * s))


def _as_f64(name: str, value: Any) -> torch.Tensor:
    """Convert to a float64 CPU tensor; float64 CPU tensors pass through unchanged (autograd is kept)."""
    try:
        return torch.as_tensor(value, dtype=_F64, device="cpu")
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"EPDParams.{name} must be a tensor or nested list of numbers, got {type(value).__name__}: {err}"
        ) from err


def _check_table(name: str, t: torch.Tensor, shape: tuple[int, ...] | None) -> None:
    """A logit table is 2-D [S, K] with S, K >= 1, finite, and matches the first table's shape."""
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(
            f"EPDParams.{name} must have shape [steps, num_points] with both >= 1, got {tuple(t.shape)}; "
            "one row per solver step (N - 1 rows for N sigmas), one column per parallel point."
        )
    if t.shape[1] > MAX_POINTS:
        raise ValueError(
            f"EPDParams.{name} has K={t.shape[1]} points per step; at most MAX_POINTS={MAX_POINTS} are allowed "
            "because a batched step makes one model call of K x batch rows. Use a table with K <= "
            f"{MAX_POINTS} (the num_points widget's maximum)."
        )
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(
            f"EPDParams.{name} has shape {tuple(t.shape)} but r_logits has {shape}; all four tables must match."
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"EPDParams.{name} contains non-finite values (nan/inf); all logits must be finite.")


def _check_sigmas(sigmas: torch.Tensor, steps: int) -> None:
    """The grid is [S + 1], finite, >= 0, strictly descending (so only the last sigma may be 0)."""
    if sigmas.ndim != 1 or sigmas.numel() != steps + 1:
        raise ValueError(
            f"EPDParams.sigmas must be 1-D with steps + 1 = {steps + 1} values, got shape {tuple(sigmas.shape)}; "
            "pass the grid the table was made for (N points for N - 1 steps)."
        )
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas < 0).any()):
        raise ValueError(f"EPDParams.sigmas must be finite and >= 0, got {sigmas.tolist()}.")
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(
            f"EPDParams.sigmas must be strictly descending (only the last may be 0), got {sigmas.tolist()}; "
            "sort the grid from sigma_max down and drop repeated values."
        )


def _check_scale_range(name: str, value: Any) -> float:
    """A scale range s_d / s_t is a finite float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) < 1.0):
        raise ValueError(f"EPDParams.{name} must be a float in [0, 1), got {value!r}; use 0 to switch the scale off.")
    return float(value)


def json_text_depth(text: str) -> int:
    """Deepest bracket nesting of JSON text, counted without parsing (brackets inside strings skipped)."""
    brackets = np.frombuffer(_NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode(), dtype=np.uint8)
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max(initial=0))


def check_json_text(text: str, what: str) -> None:
    """Refuse JSON text nested deeper than MAX_JSON_DEPTH before json.loads can hit the recursion limit."""
    depth = json_text_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(
            f"{what} is nested {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed. "
            "It was not written by ComfyUI-EPD: re-save it with EPD Save Table, or flatten the metadata."
        )


def check_json_shape(value: Any, what: str) -> None:
    """Depth <= MAX_JSON_DEPTH and <= MAX_JSON_NODES visits; shared children count each time (a DAG stops early)."""
    stack, visits = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        visits += 1
        if depth > MAX_JSON_DEPTH or visits > MAX_JSON_NODES:
            limit = f"{MAX_JSON_DEPTH} levels" if depth > MAX_JSON_DEPTH else f"{MAX_JSON_NODES} values"
            raise ValueError(f"{what} is larger than the allowed {limit}; keep metadata small and flat.")
        children = item.values() if isinstance(item, Mapping) else item if isinstance(item, (list, tuple)) else ()
        stack.extend((child, depth + 1) for child in children)


def _check_metadata(metadata: Any) -> dict[str, Any]:
    """Metadata is a small JSON-able mapping; it is deep-copied through JSON so the table owns it."""
    if not isinstance(metadata, Mapping):
        raise TypeError(f"EPDParams.metadata must be a mapping (dict), got {type(metadata).__name__}.")
    check_json_shape(metadata, "EPDParams.metadata")
    try:
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"EPDParams.metadata must be JSON-serialisable (str/number/bool/None/list/dict): {err}"
        ) from err


@dataclass(frozen=True, eq=False)
class EPDParams:
    """One EPD predictor table: raw logits [S, K] plus the grid [S + 1] they belong to.

    Float64 CPU tensors that are passed in are stored as they are (not copied), so
    a distillation loop may hand in leaf tensors with requires_grad and backpropagate
    through ``r``, ``lam``, ``c``, ``a`` and ``tau()``. Equality is identity.
    """

    r_logits: torch.Tensor
    weight_logits: torch.Tensor
    scale_dir_logits: torch.Tensor
    scale_time_logits: torch.Tensor
    sigmas: torch.Tensor
    scale_dir: float = 0.0
    scale_time: float = 0.0
    afs: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Validate once: shapes, finiteness, grid order, scale ranges, JSON metadata."""
        shape: tuple[int, ...] | None = None
        for name in _LOGIT_NAMES:
            t = _as_f64(name, getattr(self, name))
            _check_table(name, t, shape)
            shape = tuple(t.shape)
            object.__setattr__(self, name, t)
        sigmas = _as_f64("sigmas", self.sigmas)
        _check_sigmas(sigmas, self.r_logits.shape[0])
        object.__setattr__(self, "sigmas", sigmas)
        object.__setattr__(self, "scale_dir", _check_scale_range("scale_dir", self.scale_dir))
        object.__setattr__(self, "scale_time", _check_scale_range("scale_time", self.scale_time))
        if not isinstance(self.afs, bool):
            raise TypeError(f"EPDParams.afs must be a bool, got {self.afs!r}; use True or False.")
        object.__setattr__(self, "metadata", _check_metadata(self.metadata))

    @property
    def num_steps(self) -> int:
        """S, the number of solver steps (rows)."""
        return int(self.r_logits.shape[0])

    @property
    def num_points(self) -> int:
        """K, the number of parallel points per step (columns)."""
        return int(self.r_logits.shape[1])

    @property
    def r(self) -> torch.Tensor:
        """Positions r [S, K] in (0, 1)."""
        return positions_from_logits(self.r_logits)

    @property
    def lam(self) -> torch.Tensor:
        """Weights lam [S, K], each row on the simplex."""
        return weights_from_logits(self.weight_logits)

    @property
    def c(self) -> torch.Tensor:
        """Direction scales c [S, K] in (1 - s_d, 1 + s_d); 1 when s_d = 0."""
        return scales_from_logits(self.scale_dir_logits, self.scale_dir)

    @property
    def a(self) -> torch.Tensor:
        """Time scales a [S, K] in (1 - s_t, 1 + s_t); 1 when s_t = 0."""
        return scales_from_logits(self.scale_time_logits, self.scale_time)

    def tau(self) -> torch.Tensor:
        """Intermediate sigmas tau [S, K] = interp_sigma(sigma_n, sigma_{n+1}, r_{n,k}), §1.2."""
        return interp_sigma(self.sigmas[:-1, None], self.sigmas[1:, None], self.r)

    @classmethod
    def from_values(
        cls,
        r: Any,
        lam: Any,
        sigmas: Any,
        *,
        c: Any = None,
        a: Any = None,
        scale_dir: float = 0.0,
        scale_time: float = 0.0,
        afs: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> EPDParams:
        """Build a table from solver values r, lam (and optional c, a), inverting the §1.1 transforms."""
        r_t, lam_t = _as_f64("r", r), _as_f64("lam", lam)
        _check_values(r_t, lam_t)
        scales = {}
        for name, values, given in (("c", c, scale_dir), ("a", a, scale_time)):
            s = _check_scale_range("scale_dir" if name == "c" else "scale_time", given)
            scales[name] = torch.zeros_like(r_t) if values is None else _scale_logits(name, values, s, r_t.shape)
        return cls(
            logits_from_positions(r_t),
            logits_from_weights(lam_t),
            scales["c"],
            scales["a"],
            sigmas,
            scale_dir=scale_dir,
            scale_time=scale_time,
            afs=afs,
            metadata={} if metadata is None else metadata,
        )

    def replace(self, **changes: Any) -> EPDParams:
        """A copy with some fields changed (dataclasses.replace); the result is validated again."""
        return dataclasses.replace(self, **changes)

    def equals(self, other: EPDParams) -> bool:
        """Exact equality of every tensor, scalar and the metadata."""
        tensors = all(torch.equal(getattr(self, n), getattr(other, n)) for n in (*_LOGIT_NAMES, "sigmas"))
        scalars = (self.scale_dir, self.scale_time, self.afs) == (other.scale_dir, other.scale_time, other.afs)
        return tensors and scalars and dict(self.metadata) == dict(other.metadata)

    def __repr__(self) -> str:
        """Short summary: no tensor dumps."""
        hi, lo = float(self.sigmas[0]), float(self.sigmas[-1])
        return (
            f"EPDParams(steps={self.num_steps}, K={self.num_points}, afs={self.afs}, "
            f"scale_dir={self.scale_dir:g}, scale_time={self.scale_time:g}, sigmas={hi:.4g}->{lo:.4g}, "
            f"provenance={self.metadata.get('provenance', 'unknown')!r})"
        )


def _check_values(r: torch.Tensor, lam: torch.Tensor) -> None:
    """r [S, K] strictly inside (0, 1); lam [S, K] positive with rows summing to 1."""
    if r.ndim != 2 or lam.shape != r.shape:
        raise ValueError(
            f"r and lam must both have shape [steps, num_points], got r {tuple(r.shape)} and lam {tuple(lam.shape)}."
        )
    if not bool(torch.isfinite(r).all()) or not bool(((r > 0) & (r < 1)).all()):
        raise ValueError(
            f"r must lie strictly inside (0, 1), got min {r.min().item()!r}, max {r.max().item()!r}; "
            "use e.g. 1e-12 or 1 - 1e-12 for a point at an end of the step."
        )
    if not bool(torch.isfinite(lam).all()) or not bool((lam > 0).all()):
        raise ValueError(
            f"lam must be finite and > 0, got min {lam.min().item()!r}; use a tiny weight such as 1e-12 instead of 0."
        )
    sums = lam.sum(dim=-1)
    if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-6, rtol=0)):
        raise ValueError(f"each lam row must sum to 1, got row sums {sums.tolist()}; normalise the rows first.")


def _scale_logits(name: str, values: Any, s: float, shape: torch.Size) -> torch.Tensor:
    """Logits of a scale table; values must lie in the open range (1 - s, 1 + s) or be 1 when s = 0."""
    t = _as_f64(name, values)
    if t.shape != shape:
        raise ValueError(f"{name} must have the shape of r {tuple(shape)}, got {tuple(t.shape)}.")
    if s > 0 and not bool(((t > 1 - s) & (t < 1 + s)).all()):
        raise ValueError(
            f"{name} must lie strictly inside (1 - s, 1 + s) = ({1 - s:g}, {1 + s:g}), got min {t.min().item()!r}, "
            f"max {t.max().item()!r}; widen the scale range or clip the values."
        )
    try:
        logits = logits_from_scales(t, s)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from err
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"{name} is too close to the edge of its range (1 - s, 1 + s) to be stored as a finite logit.")
    return logits
