"""Import upstream BeierZhu/EPD predictor pickles without running them.

The files are ``{'model': EPD_predictor}`` (ICCV snapshots add ``'loss_fn'``) written
through NVIDIA ``torch_utils.persistence``: the class source travels inside the pickle
and tensors are legacy ``torch.save`` blobs. epd_core.upstream_pickle decodes them into
inert stand-ins within budgets (nothing from a file runs); this module checks the fields
it reads strictly (types, K <= MAX_POINTS) and copies only small JSON data into metadata.

CLI: ``python -m epd_core.upstream IN.pkl OUT.safetensors [--sigmas S0 S1 ...]``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from . import schedules
from .params import EPDParams
from .pickle_budget import OMIT, describe, json_copy
from .table_io import save_table
from .upstream_pickle import MAX_PICKLE_BYTES, PersistentObject, decode_upstream_pickle, unbox
from .vocab import MAX_POINTS

_PARAM_NAMES = ("r_params", "weight_s", "scale_dir_params", "scale_time_params")
_SD3_DEFAULT_SHIFT = 3.0  # SD3-Medium scheduler config; the SD3 pickles do not store it (reference README)
_VP_BETAS = {"sd15": (0.00085, 0.012), "lsun_bedroom_ldm": (0.0015, 0.0195)}


# --- conversion ---------------------------------------------------------------------------------


def _predictor_and_loss(obj: Any, source: str) -> tuple[PersistentObject, PersistentObject | None]:
    """Find the EPD_predictor (container key 'model') and the optional ICCV loss_fn."""
    model = obj.get("model") if isinstance(obj, dict) else obj
    loss = obj.get("loss_fn") if isinstance(obj, dict) else None
    if not isinstance(model, PersistentObject) or model.class_name != "EPD_predictor":
        found = model.class_name if isinstance(model, PersistentObject) else type(model).__name__
        raise ValueError(f"{source} holds {found!r} under 'model', expected an EPD_predictor; it is not an EPD table. "
                         "Use a predictor .pkl saved by BeierZhu/EPD training.")  # fmt: skip
    if not isinstance(model.state, dict) or not isinstance(model.state.get("_parameters"), dict):
        # A damaged file is a bad value, not a caller's type error: ValueError like every other import problem.
        raise ValueError(f"{source}: the EPD_predictor has no _parameters; the file is damaged.")
    return model, loss if isinstance(loss, PersistentObject) else None


_FIELDS = {
    "num_steps": "int", "num_points": "int", "afs": "bool", "schedule_type": "str", "backend": "str",
    "dataset_name": "str", "sampler_stu": "str", "schedule_rho": "float", "sigma_min": "float",
    "sigma_max": "float", "flowmatch_mu": "float", "flowmatch_shift": "float", "scale_dir": "float",
    "scale_time": "float", "guidance_rate": "float",
}  # fmt: skip
_EXPECTED = {"int": "an integer", "bool": "True or False (or 0/1)", "float": "a finite number", "str": "a short name"}
_ATTR_NODES, _ATTRS_NODES = 256, 4096  # JSON values copied into metadata['upstream']: per attribute, in all


def _public_state(model: PersistentObject) -> dict[str, Any]:
    """``_init_kwargs`` overlaid with the predictor's public attributes, shallow (nothing is walked)."""
    init = model.state.get("_init_kwargs")
    raw = dict(init) if isinstance(init, dict) else {}
    raw.update(model.state)
    return {k: v for k, v in raw.items() if isinstance(k, str) and not k.startswith("_") and k != "training"}


def _field_ok(kind: str, value: Any) -> bool:
    """Strict types: no bool as a number, no float as an integer, no text as a flag."""
    if kind == "bool":
        return value is True or value is False or (type(value) is int and value in (0, 1))
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, str) and len(value) <= 64


def upstream_fields(model: PersistentObject, source: str) -> dict[str, Any]:
    """The metadata fields the conversion reads, type-checked (None where absent); one error lists all."""
    raw = _public_state(model)
    fields = {name: raw.get(name) for name in _FIELDS}
    problems = [
        f"{name!r} is {describe(value)}, expected {_EXPECTED[kind]}"
        for name, kind in _FIELDS.items()
        if (value := fields[name]) is not None and not _field_ok(kind, value)
    ]
    if problems:
        raise ValueError(
            f"{source}: wrong upstream field {'; '.join(problems)}. Upstream EPD writes these as plain "
            "numbers and names; the file was edited or damaged: re-download it, or fix the field and re-export it."
        )
    if fields["afs"] is not None:
        fields["afs"] = bool(fields["afs"])
    if fields["num_points"] is not None:
        _check_points(fields["num_points"], source)
    return fields


def _check_points(k: int, source: str) -> None:
    """K is capped where the num_points widget caps it (vocab.MAX_POINTS)."""
    if not 1 <= k <= MAX_POINTS:
        raise ValueError(
            f"{source}: the table has K={k} points per step; at most {MAX_POINTS} are allowed (the num_points "
            "widget's maximum; a batched step makes one model call of K x batch rows). Use a table with fewer points."
        )


def predictor_attributes(model: PersistentObject) -> dict[str, Any]:
    """Upstream metadata: ``_init_kwargs`` overlaid with the attributes stored on the predictor (§6.1).

    Only small JSON data is copied (at most _ATTR_NODES values per attribute, _ATTRS_NODES
    in all, 6 levels): a shared-children DAG or a huge value is left out, never expanded.
    """
    attrs, total = {}, _ATTRS_NODES
    for key, value in _public_state(model).items():
        allowance = [min(_ATTR_NODES, total)]
        copy = json_copy(value, allowance)
        total -= min(_ATTR_NODES, total) - allowance[0]  # visits are charged even when the value is left out
        if copy is not OMIT:
            attrs[key] = copy
        if total <= 0:
            break
    return attrs


def _param(params: Mapping[str, Any], name: str, shape: tuple[int, int] | None, source: str) -> torch.Tensor:
    """One raw parameter as float64 [S, K]; the scale tables default to zeros when absent."""
    if params.get(name) is None and name.startswith("scale_") and shape is not None:
        return torch.zeros(shape, dtype=torch.float64)
    value = unbox(params.get(name))
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
    return str(attrs.get("dataset_name") or "unknown")


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
        if attrs.get(key) is None and _field_ok("float", state.get(key)):
            attrs[key] = float(state[key])
    t_steps = unbox(state.get("t_steps"))
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
    try:
        derived = upstream_sigmas(attrs)
    except ValueError as err:
        raise ValueError(f"{source}: the sigma grid from the file's metadata is invalid ({err}); pass the {n} "
                         "sigmas the table was trained on (--sigmas on the command line).") from err  # fmt: skip
    if derived is None:
        raise ValueError(
            f"{source}: cannot derive the sigma grid (schedule_type={attrs['schedule_type']!r}, "
            f"backend={attrs['backend']!r}, sigma_min={attrs['sigma_min']!r}); pass the {n} sigmas "
            "the table was trained on (--sigmas on the command line)."
        )
    return derived


def upstream_to_params(obj: Any, *, sigmas: Any = None, source: str = "upstream pickle") -> EPDParams:
    """Convert a decoded upstream predictor (see decode_upstream_pickle) into EPDParams (§1.1 transforms)."""
    model, loss = _predictor_and_loss(obj, source)
    fields = upstream_fields(model, source)
    params = model.state["_parameters"]
    r_logits = _param(params, "r_params", None, source)
    shape = (int(r_logits.shape[0]), int(r_logits.shape[1]))
    _check_points(shape[1], source)
    if fields["num_steps"] is None:
        fields["num_steps"] = shape[0] + 1
    if fields["num_points"] is None:
        fields["num_points"] = shape[1]
    if (fields["num_steps"] - 1, fields["num_points"]) != shape:
        raise ValueError(
            f"{source}: r_params has shape {shape} but num_steps={fields['num_steps']}, "
            f"num_points={fields['num_points']}; expected [num_steps - 1, num_points]. The file is damaged."
        )
    weights, beta, gamma = (_param(params, name, shape, source) for name in _PARAM_NAMES[1:])
    grid, grid_source = _resolve_sigmas(sigmas, loss, fields, source)
    attrs = predictor_attributes(model)
    attrs.update((k, v) for k, v in fields.items() if v is not None)
    try:
        return EPDParams(r_logits, weights, beta, gamma, grid, scale_dir=float(fields["scale_dir"] or 0.0),
                         scale_time=float(fields["scale_time"] or 0.0), afs=bool(fields["afs"]),
                         metadata=_metadata(fields, attrs, grid_source))  # fmt: skip
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: {err}") from err


def _metadata(fields: Mapping[str, Any], attrs: dict[str, Any], grid_source: str) -> dict[str, Any]:
    """The imported table's metadata; ``upstream`` holds the bounded copy of the file's attributes."""
    return {
        "provenance": "imported",
        "source_format": "BeierZhu/EPD predictor pickle",
        "model_family": model_family(fields),
        "kind": "flow" if fields["schedule_type"] == "flowmatch" else "ve",
        "schedule": fields["schedule_type"],
        "guidance": fields["guidance_rate"],
        "form": "direction",
        "sampler": "epd_plugin" if fields["sampler_stu"] == "ipndm" else "epd",
        "sigma_source": grid_source,
        "upstream": attrs,
    }


def _read_capped(path: Path) -> bytes:
    """The file's bytes, its size checked with stat first and at most MAX_PICKLE_BYTES + 1 read."""
    if not path.is_file():
        raise FileNotFoundError(f"upstream EPD pickle not found: {path}")
    size = path.stat().st_size
    if size <= MAX_PICKLE_BYTES:
        with path.open("rb") as fh:
            data = fh.read(MAX_PICKLE_BYTES + 1)
        size = len(data)
    if size > MAX_PICKLE_BYTES:
        raise ValueError(
            f"{path} is {size} bytes; an upstream EPD predictor .pkl is 7-15 KB and at most {MAX_PICKLE_BYTES} "
            "bytes are read. Choose the predictor .pkl itself (not a checkpoint or archive); nothing was read."
        )
    return data


def import_upstream_table(path: str | Path, *, sigmas: Any = None) -> EPDParams:
    """Read an upstream predictor .pkl safely and convert it; metadata gets the file name and SHA-256."""
    path = Path(path)
    data = _read_capped(path)
    params = upstream_to_params(decode_upstream_pickle(data, str(path)), sigmas=sigmas, source=str(path))
    extra = {"source_file": path.name, "source_sha256": hashlib.sha256(data).hexdigest()}
    return params.replace(metadata={**params.metadata, **extra})


def _parse_sigmas(values: Sequence[str] | None) -> list[float] | None:
    """--sigmas accepts space- and/or comma-separated numbers."""
    if not values:
        return None
    try:
        return [float(v) for item in values for v in item.replace(",", " ").split()]
    except ValueError as err:
        raise ValueError(f"--sigmas takes numbers, e.g. --sigmas 14.6 7.1 0.03 ({err})") from err


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
        params = import_upstream_table(args.input, sigmas=_parse_sigmas(args.sigmas))  # every problem: ValueError
        save_table(params, args.output)
    except (ValueError, OSError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    sys.stdout.write(f"wrote {args.output}: {params!r}, sigmas from {params.metadata['sigma_source']}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
