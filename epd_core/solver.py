"""EPD-Solver and EPD-Plugin sampling loops (epd-method.md §1.2, §1.3, §2).

The model is seen only through the k-diffusion denoiser contract
``model(x, sigma_vec, **extra_args) -> denoised``. Both samplers keep ComfyUI's
sampler-function signature so they drop into ``comfy.samplers.KSAMPLER``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch

from .params import EPDParams
from .points import evaluate_points
from .tables import default_table

Kind = Literal["ve", "flow"]
Form = Literal["direction", "data"]
Parallel = Literal["batched", "sequential"]
Tail = Literal["drop", "stop", "keep"]

KINDS = ("ve", "flow")
# Measured in bench/bench_exact.py: the data form stays stable under CFG 7.5 where the
# paper's direction form and every multistep built-in diverge (README, benchmark table).
DEFAULT_FORM: Form = "data"
FORMS = ("direction", "data")
TAILS = ("drop", "stop", "keep")

# iPNDM / Adams-Bashforth coefficients for orders 1-4 (epd-method.md §2), newest first.
AB_COEFFS = ((1.0,), (1.5, -0.5), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def prepare_sigmas(sigmas: torch.Tensor, tail: Tail = "drop") -> torch.Tensor:
    """Handle ComfyUI's ``[..., sigma_min, 0]`` tail without wasting two rounds on it.

    drop: remove the penultimate sigma, so the last EPD step lands on 0 directly
    (what ComfyUI does for dpm_2 and uni_pc). stop: end at sigma_min. keep: as given.
    Only the caller knows whether a grid still has that tail (the ComfyUI bridge
    compares the penultimate sigma with the model's sigma_min), so the samplers
    default to keep.
    """
    if tail not in TAILS:
        raise ValueError(f"tail={tail!r} is not one of {TAILS}")
    if tail == "keep" or len(sigmas) < 3 or float(sigmas[-1]) != 0.0:
        return sigmas
    if tail == "drop":
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas[:-1]


def afs_denoised(x: torch.Tensor, sigma: float, kind: Kind) -> torch.Tensor:
    """Analytical first step (epd-method.md §1.2): D(x, sigma_max) ~ E[x0] ~ 0.

    VE: d = x / sqrt(1 + sigma^2) as upstream, so D = x - sigma d. Flow: D = 0 (d = x / sigma).
    """
    if kind == "flow":
        return torch.zeros_like(x)
    return x * (1.0 - sigma / (1.0 + sigma**2) ** 0.5)


def per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar as is; a per-sample vector [B] shaped [B, 1, ...] to broadcast over x [B, ...]."""
    return value if value.ndim == 0 else value.reshape(-1, *([1] * (x.ndim - 1)))


def combine(
    x: torch.Tensor,
    sigma: float,
    sigma_next: float,
    x_hats: list[torch.Tensor],
    denoised: list[torch.Tensor],
    tau: torch.Tensor,
    lam_c: torch.Tensor,
    form: Form,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final EPD combination of the K point evaluations; returns (x_next, D_bar).

    direction (the paper): x' = x + h * sum_k lam_k c_k (x_hat_k - D_k) / tau_k.
    data: D_bar = sum_k lam_k c_k D_k, then one exponential-integrator (DDIM) step
    x' = D_bar + (sigma'/sigma)(x - D_bar), which is the exact solution when D is
    constant over the step and stays stable under strong guidance.
    """
    d_bar = sum(per_sample(w, x) * dk for w, dk in zip(lam_c, denoised))
    if form == "data":
        return d_bar + (sigma_next / sigma) * (x - d_bar), d_bar
    g = sum(per_sample(w, x) * (xk - dk) / per_sample(t, x) for w, xk, dk, t in zip(lam_c, x_hats, denoised, tau))
    return x + (sigma_next - sigma) * g, d_bar


def epd_step(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigma: float,
    sigma_next: float,
    d_jump: torch.Tensor,
    row: dict[str, torch.Tensor],
    extra_args: dict[str, Any],
    *,
    form: Form = DEFAULT_FORM,
    parallel: Parallel = "batched",
    chunk_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One EPD step sigma -> sigma_next (epd-method.md §1.2), differentiable in ``row``.

    row: tensors of shape [K] for ``tau`` (intermediate sigmas), ``a`` (time scale) and
    ``lam_c`` (weights times direction scale), or [K, B] to give every sample its own
    table (RL rollouts). d_jump: the direction that carries x to the intermediate points
    (Euler's d_n for EPD, an Adams-Bashforth mix for the plugin).
    """
    tau = row["tau"].to(x.device)
    x_hats = [x + per_sample(t.to(x.dtype) - sigma, x) * d_jump for t in tau]
    sigma_eval = (row["a"].to(x.device) * tau).to(x.dtype)
    denoised = evaluate_points(model, x_hats, sigma_eval, extra_args, parallel, chunk_size)
    lam_c = row["lam_c"].to(x.device, x.dtype)
    return combine(x, sigma, sigma_next, x_hats, denoised, tau.to(x.dtype), lam_c, form)


def table_rows(params: EPDParams) -> list[dict[str, torch.Tensor]]:
    """Per-step rows {tau, a, lam_c} of a table, computed once in float64."""
    tau, a, lam_c = params.tau(), params.a, params.lam * params.c
    return [{"tau": tau[n], "a": a[n], "lam_c": lam_c[n]} for n in range(params.num_steps)]


def resolve_table(
    sigmas: torch.Tensor, params: EPDParams | None, num_points: int, form: Form, afs: bool | None
) -> tuple[EPDParams, bool]:
    """The table to sample with and whether AFS is on.

    A table's positions are fractions of each step, so a table with the right step count
    is applied to the sigmas actually given (re-based when its own grid differs).
    """
    steps = len(sigmas) - 1
    grid = sigmas.detach().double().cpu()
    if params is None:
        params = default_table(grid, num_points, form=form)
    elif params.num_steps != steps:
        raise ValueError(
            f"EPD table has {params.num_steps} steps but the sigmas give {steps}; "
            "feed the sampler the table's own grid (EPD Sigmas node) or use a table made for this step count"
        )
    elif not torch.equal(params.sigmas, grid):
        params = params.replace(sigmas=grid)
    return params, params.afs if afs is None else bool(afs)


def _check_options(kind: str, form: str, parallel: str) -> None:
    for name, value, allowed in (
        ("kind", kind, KINDS),
        ("form", form, FORMS),
        ("parallel", parallel, ("batched", "sequential")),
    ):
        if value not in allowed:
            raise ValueError(f"{name}={value!r} is not one of {allowed}")


def _report(callback: Callable | None, i: int, x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


def _sigmas_for(sigmas: torch.Tensor, params: EPDParams | None, tail: Tail) -> torch.Tensor:
    """A table's own grid is used as given; any other grid gets the tail rule."""
    if params is not None and len(sigmas) - 1 == params.num_steps:
        return sigmas
    return prepare_sigmas(sigmas, tail)


def adams_bashforth(d: torch.Tensor, history: list[torch.Tensor], max_order: int) -> torch.Tensor:
    """iPNDM extrapolated direction from d_n and past anchor directions (newest last).

    max_order=1 gives d_n itself, the Euler jump of the plain EPD-Solver.
    """
    order = min(max_order, len(history) + 1)
    recent = [d] + history[::-1][: order - 1]
    return sum(cf * dk for cf, dk in zip(AB_COEFFS[order - 1], recent))


class StepConfig(NamedTuple):
    """How each step runs; shared by sampling and distillation so they cannot drift apart."""

    kind: Kind = "ve"
    form: Form = DEFAULT_FORM
    afs: bool = False
    max_order: int = 1
    parallel: Parallel = "batched"
    chunk_size: int = 0


def advance(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    n: int,
    sigmas: torch.Tensor,
    row: dict[str, torch.Tensor],
    history: list[torch.Tensor],
    extra_args: dict[str, Any],
    config: StepConfig,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Step n of the EPD loop: anchor, jump direction, K points; returns (x_next, D_bar, history)."""
    # A grid that requires grad (distillation with learned sigmas) stays a tensor so the
    # gradient reaches it through every use; otherwise plain floats, as ComfyUI passes them.
    sigma, sigma_next = (sigmas[n], sigmas[n + 1]) if sigmas.requires_grad else (float(sigmas[n]), float(sigmas[n + 1]))
    if n == 0 and config.afs:
        denoised = afs_denoised(x, sigma, config.kind)
    else:
        denoised = model(x, sigma * x.new_ones([x.shape[0]]), **extra_args)
    d = (x - denoised) / sigma
    d_jump = adams_bashforth(d, history, config.max_order)
    history = (history + [d.detach()])[-(config.max_order - 1) :] if config.max_order > 1 else []
    x_next, d_bar = epd_step(
        model, x, sigma, sigma_next, d_jump, row, extra_args,
        form=config.form, parallel=config.parallel, chunk_size=config.chunk_size,
    )  # fmt: skip
    return x_next, d_bar, history


def run_epd(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable | None = None,
    *,
    params: EPDParams | None = None,
    num_points: int = 2,
    kind: Kind = "ve",
    form: Form = DEFAULT_FORM,
    parallel: Parallel = "batched",
    chunk_size: int = 0,
    afs: bool | None = None,
    tail: Tail = "keep",
    max_order: int = 1,
) -> torch.Tensor:
    """The shared EPD loop; max_order > 1 is the iPNDM plugin. Not decorated, so
    distillation can differentiate through it."""
    _check_options(kind, form, parallel)
    if not 1 <= max_order <= 4:
        raise ValueError(f"max_order={max_order} must be between 1 and 4")
    extra_args = {} if extra_args is None else extra_args
    sigmas = _sigmas_for(sigmas, params, tail)
    params, use_afs = resolve_table(sigmas, params, num_points, form, afs)
    config = StepConfig(kind, form, use_afs, max_order, parallel, chunk_size)
    return run_rows(model, x, sigmas, table_rows(params), config, extra_args, callback)


def run_rows(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    rows: list[dict[str, torch.Tensor]],
    config: StepConfig,
    extra_args: dict[str, Any] | None = None,
    callback: Callable | None = None,
) -> torch.Tensor:
    """The EPD loop over precomputed rows (``table_rows``, or per-sample rows [K, B])."""
    if len(rows) != len(sigmas) - 1:
        raise ValueError(f"{len(rows)} table rows for {len(sigmas) - 1} steps; give one row per step")
    extra_args = {} if extra_args is None else extra_args
    history: list[torch.Tensor] = []
    for i, row in enumerate(rows):
        x, d_bar, history = advance(model, x, i, sigmas, row, history, extra_args, config)
        _report(callback, i, x, float(sigmas[i]), d_bar)
    return x


@torch.no_grad()
def sample_epd(model, x, sigmas, extra_args=None, callback=None, disable=None, **options: Any) -> torch.Tensor:
    """EPD-Solver, Zhu et al. (ICCV 2025), epd-method.md §1.2.

    Each step makes two sequential model rounds: the anchor D(x_n, sigma_n) (skipped by
    AFS on the first step) and one batched call over the K intermediate points.
    Options are those of ``run_epd``; ``disable`` is accepted for signature
    compatibility, progress goes through ``callback``.
    """
    if "max_order" in options:
        raise TypeError("sample_epd takes no max_order; use sample_epd_plugin")
    return run_epd(model, x, sigmas, extra_args, callback, **options)


@torch.no_grad()
def sample_epd_plugin(
    model, x, sigmas, extra_args=None, callback=None, disable=None, *, max_order: int = 3, **options: Any
) -> torch.Tensor:
    """EPD-Plugin on iPNDM (epd-method.md §2): Adams-Bashforth jumps to the K points.

    The history holds the anchor directions d_n only, as upstream does.
    """
    return run_epd(model, x, sigmas, extra_args, callback, max_order=max_order, **options)
