"""Import upstream BeierZhu/EPD predictor pickles without running them (epd-method.md §6.1, §6.2).

The files are ``{'model': EPD_predictor}`` (ICCV snapshots add ``'loss_fn'``) written
through NVIDIA ``torch_utils.persistence``: the class source travels inside the pickle
and tensors are legacy ``torch.save`` blobs. Here every global resolves to an inert
stand-in from a fixed allow-list, the embedded source is dropped unread, and the
storage blobs are parsed by a second restricted unpickler. Nothing from a file runs.

CLI: ``python -m epd_core.upstream IN.pkl OUT.safetensors [--sigmas S0 S1 ...]``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import math
import pickle
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from . import schedules
from .params import EPDParams
from .table_io import save_table
from .torch_legacy import read_legacy_storage, strided_copy

MAX_PICKLE_BYTES = 16 * 2**20  # released predictor pickles are 7-15 KB
# ICCV loss_fn objects keep references to solver functions; they become inert names, never callables.
_SOLVER_REF = re.compile(r"[a-z0-9_]+_sampler")
_PARAM_NAMES = ("r_params", "weight_s", "scale_dir_params", "scale_time_params")
_SD3_DEFAULT_SHIFT = 3.0  # SD3-Medium scheduler config; the SD3 pickles do not store it (reference README)
_VP_BETAS = {"sd15": (0.00085, 0.012), "lsun_bedroom_ldm": (0.0015, 0.0195)}  # epd-method.md §3.4


# --- stand-ins: plain data holders, nothing here imports or runs upstream code ---------------


class _InertModule:
    """Stand-in for a torch.nn activation module: keeps its pickled state, computes nothing."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Sigmoid(_InertModule):
    """Stand-in for torch.nn.modules.activation.Sigmoid."""


class _Softmax(_InertModule):
    """Stand-in for torch.nn.modules.activation.Softmax."""


class PersistentObject:
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` would rebuild, as plain data.

    ``module_src`` is deliberately not kept: it is code, and it is never executed.
    """

    def __init__(self, meta: Any) -> None:
        if not isinstance(meta, dict) or meta.get("type") != "class":
            raise ValueError(f"persistent object meta must be a dict with type 'class', got {type(meta).__name__}")
        self.class_name = str(meta.get("class_name"))
        self.version = meta.get("version")
        self.state = meta.get("state")

    def __setstate__(self, state: Any) -> None:
        self.extra_state = state


class SolverReference:
    """A pickled reference to an upstream solver function (ICCV ``loss_fn``); only its name is kept."""

    def __init__(self, name: str) -> None:
        self.name = name


class TensorBox:
    """A decoded tensor, boxed so that no torch object is ever exposed to the pickle machine (BUILD)."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value

    def __setstate__(self, state: Any) -> None:
        raise ValueError("a tensor in an upstream EPD pickle carries unexpected state")


def _load_from_bytes(blob: Any) -> TensorBox:
    """Stand-in for torch.storage._load_from_bytes: parse the legacy blob with the restricted reader."""
    return TensorBox(read_legacy_storage(blob))


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> TensorBox:
    """Stand-in for torch._utils._rebuild_tensor_v2 (requires_grad, hooks and metadata are ignored)."""
    if not isinstance(storage, TensorBox):
        raise ValueError(f"tensor storage must come from a storage blob, got {type(storage).__name__}")
    return TensorBox(strided_copy(storage.value, offset, size, stride))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """Stand-in for torch._utils._rebuild_parameter: the parameter's data tensor itself."""
    return data


def _unbox(value: Any) -> torch.Tensor | None:
    """The float64 tensor inside a TensorBox, else None."""
    return value.value.to(torch.float64) if isinstance(value, TensorBox) else None


# --- the outer pickle ---------------------------------------------------------------------------

ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch.nn.modules.activation", "Sigmoid"): _Sigmoid,
    ("torch.nn.modules.activation", "Softmax"): _Softmax,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentObject,
}


class UpstreamUnpickler(pickle.Unpickler):
    """Resolves exactly the globals of an upstream predictor pickle to stand-ins; refuses all others."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        if module == "solvers" and _SOLVER_REF.fullmatch(name):
            return SolverReference(name)  # the global's value is this name holder; it is never called
        allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
        raise ValueError(
            f"refusing global {module}.{name}: an upstream EPD predictor pickle only uses {allowed} "
            "(and solvers.*_sampler names); this file is something else and was not run."
        )


def decode_upstream_pickle(data: bytes, source: str = "upstream pickle") -> Any:
    """Decode an upstream pickle into plain stand-ins (dicts, tensors, PersistentObject); runs no file code."""
    if len(data) > MAX_PICKLE_BYTES:
        raise ValueError(f"{source} is {len(data)} bytes; upstream predictor pickles are a few KB, refusing.")
    try:
        return UpstreamUnpickler(io.BytesIO(data)).load()
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(
            f"{source} is not a readable upstream EPD predictor pickle ({type(err).__name__}: {err})"
        ) from err


# --- conversion ---------------------------------------------------------------------------------


def _predictor_and_loss(obj: Any, source: str) -> tuple[PersistentObject, PersistentObject | None]:
    """Find the EPD_predictor (container key 'model') and the optional ICCV loss_fn."""
    model = obj.get("model") if isinstance(obj, dict) else obj
    loss = obj.get("loss_fn") if isinstance(obj, dict) else None
    if not isinstance(model, PersistentObject) or model.class_name != "EPD_predictor":
        found = model.class_name if isinstance(model, PersistentObject) else type(model).__name__
        raise ValueError(f"{source} holds {found!r} under 'model', expected an EPD_predictor; it is not an EPD table.")
    if not isinstance(model.state, dict) or not isinstance(model.state.get("_parameters"), dict):
        # A damaged file is a bad value, not a caller's type error: ValueError like every other import problem.
        raise ValueError(f"{source}: the EPD_predictor has no _parameters; the file is damaged.")
    return model, loss if isinstance(loss, PersistentObject) else None


def _json_scalars(state: Mapping[str, Any]) -> dict[str, Any]:
    """Public attributes that are JSON data (numbers, strings, bools, None, lists and dicts of those)."""

    def plain(v: Any) -> bool:
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        return v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))

    return {k: v for k, v in state.items() if not k.startswith("_") and k != "training" and plain(v)}


def predictor_attributes(model: PersistentObject) -> dict[str, Any]:
    """Upstream metadata: ``_init_kwargs`` overlaid with the attributes stored on the predictor (§6.1)."""
    init = model.state.get("_init_kwargs")
    attrs = _json_scalars(init) if isinstance(init, dict) else {}
    attrs.update(_json_scalars(model.state))
    return attrs


def _param(params: Mapping[str, Any], name: str, shape: tuple[int, int] | None, source: str) -> torch.Tensor:
    """One raw parameter as float64 [S, K]; the scale tables default to zeros when absent."""
    if params.get(name) is None and name.startswith("scale_") and shape is not None:
        return torch.zeros(shape, dtype=torch.float64)
    value = _unbox(params.get(name))
    if value is None or value.ndim != 2 or (shape is not None and tuple(value.shape) != shape):
        got = tuple(value.shape) if value is not None else type(params.get(name)).__name__
        raise ValueError(f"{source}: parameter {name!r} should be a [steps, points] tensor {shape or ''}, got {got}.")
    return value


def model_family(attrs: Mapping[str, Any]) -> str:
    """sd15 / sd3 / flux for the T2I backends, else the ICCV dataset name (cifar10, ffhq, ...)."""
    backend = attrs.get("backend")
    if backend in ("sd3", "flux"):
        return str(backend)
    if backend == "ldm" or attrs.get("dataset_name") == "ms_coco":
        return "sd15"
    return str(attrs.get("dataset_name", "unknown"))


def upstream_sigmas(attrs: Mapping[str, Any]) -> tuple[torch.Tensor, str] | None:
    """Rebuild the grid a table was trained on from its metadata (§3.4), or None when it cannot be derived."""
    n, kind = int(attrs["num_steps"]), attrs.get("schedule_type")
    rho = float(attrs.get("schedule_rho") or 1.0)
    lo, hi = attrs.get("sigma_min"), attrs.get("sigma_max")
    if kind == "flowmatch":
        mu = attrs.get("flowmatch_mu")
        if mu is not None:
            return schedules.get_sigmas_flowmatch(n, mu=float(mu)), f"flowmatch mu={mu}"
        shift = attrs.get("flowmatch_shift") or (_SD3_DEFAULT_SHIFT if attrs.get("backend") == "sd3" else None)
        if shift is None:
            return None
        return schedules.get_sigmas_flowmatch(n, shift=float(shift)), f"flowmatch shift={shift}"
    if kind == "discrete":
        betas = _VP_BETAS.get(model_family(attrs))
        if betas is None:
            return None
        table = schedules.vp_discrete_sigmas(*betas)
        return schedules.get_sigmas_discrete(n, table, rho=rho), f"discrete betas={betas} rho={rho}"
    if kind in ("time_uniform", "polynomial", "logsnr") and lo and hi:
        kw = {} if kind == "logsnr" else {"rho": rho}
        grid = schedules.get_sigmas(kind, n, sigma_min=float(lo), sigma_max=float(hi), **kw)
        return grid, f"{kind} sigma_min={lo} sigma_max={hi}"
    return None


def _loss_grid(loss: PersistentObject | None, attrs: dict[str, Any], n: int) -> torch.Tensor | None:
    """The ICCV loss_fn's student grid t_steps, and its sigma range into ``attrs`` when the model lacks it."""
    state = loss.state if loss is not None and isinstance(loss.state, dict) else {}
    for key in ("sigma_min", "sigma_max"):
        if attrs.get(key) is None and isinstance(state.get(key), (int, float)):
            attrs[key] = float(state[key])
    t_steps = _unbox(state.get("t_steps"))
    if t_steps is not None and t_steps.numel() == n:
        return t_steps.flatten()
    return None


def _resolve_sigmas(
    sigmas: Any, loss: PersistentObject | None, attrs: dict[str, Any], source: str
) -> tuple[torch.Tensor, str]:
    """Caller's sigmas, else the loss_fn's t_steps, else the grid derived from the metadata."""
    n = int(attrs["num_steps"])
    if sigmas is not None:
        return torch.as_tensor(sigmas, dtype=torch.float64).flatten(), "given"
    t_steps = _loss_grid(loss, attrs, n)
    if t_steps is not None:
        return t_steps, "loss_fn.t_steps"
    derived = upstream_sigmas(attrs)
    if derived is None:
        raise ValueError(
            f"{source}: cannot derive the sigma grid (schedule_type={attrs.get('schedule_type')!r}, "
            f"backend={attrs.get('backend')!r}, sigma_min={attrs.get('sigma_min')!r}); pass the {n} sigmas "
            "the table was trained on (--sigmas on the command line)."
        )
    return derived


def upstream_to_params(obj: Any, *, sigmas: Any = None, source: str = "upstream pickle") -> EPDParams:
    """Convert a decoded upstream predictor (see decode_upstream_pickle) into EPDParams (§1.1 transforms)."""
    model, loss = _predictor_and_loss(obj, source)
    attrs = predictor_attributes(model)
    params = model.state["_parameters"]
    r_logits = _param(params, "r_params", None, source)
    shape = (int(r_logits.shape[0]), int(r_logits.shape[1]))
    attrs.setdefault("num_steps", shape[0] + 1)
    attrs.setdefault("num_points", shape[1])
    if (int(attrs["num_steps"]) - 1, int(attrs["num_points"])) != shape:
        raise ValueError(
            f"{source}: r_params has shape {shape} but num_steps={attrs['num_steps']}, "
            f"num_points={attrs['num_points']}; expected [num_steps - 1, num_points]."
        )
    weights, beta, gamma = (_param(params, name, shape, source) for name in _PARAM_NAMES[1:])
    s_dir, s_time = float(attrs.get("scale_dir") or 0.0), float(attrs.get("scale_time") or 0.0)
    grid, grid_source = _resolve_sigmas(sigmas, loss, attrs, source)
    metadata = {
        "provenance": "imported",
        "source_format": "BeierZhu/EPD predictor pickle",
        "model_family": model_family(attrs),
        "kind": "flow" if attrs.get("schedule_type") == "flowmatch" else "ve",
        "schedule": attrs.get("schedule_type"),
        "guidance": attrs.get("guidance_rate"),
        "form": "direction",
        "sampler": "epd_plugin" if attrs.get("sampler_stu") == "ipndm" else "epd",
        "sigma_source": grid_source,
        "upstream": attrs,
    }
    try:
        return EPDParams(r_logits, weights, beta, gamma, grid, scale_dir=s_dir, scale_time=s_time,
                         afs=bool(attrs.get("afs", False)), metadata=metadata)  # fmt: skip
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: {err}") from err


def import_upstream_table(path: str | Path, *, sigmas: Any = None) -> EPDParams:
    """Read an upstream predictor .pkl safely and convert it; metadata gets the file name and SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"upstream EPD pickle not found: {path}")
    data = path.read_bytes()
    params = upstream_to_params(decode_upstream_pickle(data, str(path)), sigmas=sigmas, source=str(path))
    extra = {"source_file": path.name, "source_sha256": hashlib.sha256(data).hexdigest()}
    return params.replace(metadata={**params.metadata, **extra})


def _parse_sigmas(values: Sequence[str] | None) -> list[float] | None:
    """--sigmas accepts space- and/or comma-separated numbers."""
    if not values:
        return None
    return [float(v) for item in values for v in item.replace(",", " ").split()]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: convert IN.pkl to OUT.safetensors without running the pickle."""
    parser = argparse.ArgumentParser(prog="python -m epd_core.upstream", description=main.__doc__)
    parser.add_argument("input", type=Path, help="upstream BeierZhu/EPD predictor pickle (.pkl)")
    parser.add_argument("output", type=Path, help="EPD table to write (.safetensors)")
    parser.add_argument("--sigmas", nargs="+", help="the N sigmas the table was trained on (descending)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    if args.output.exists() and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it")
    try:
        params = import_upstream_table(args.input, sigmas=_parse_sigmas(args.sigmas))
        save_table(params, args.output)
    except (ValueError, OSError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    sys.stdout.write(f"wrote {args.output}: {params!r}, sigmas from {params.metadata['sigma_source']}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
