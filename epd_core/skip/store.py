"""Start models to and from .safetensors (style.md §3: safetensors with string metadata, never pickle).

One file holds one StartModel (a Gaussian mixture) or one FlowStart: its tensors under fixed names
(a flow's coupling parameters under "params.<name>") and family, shape, sigma_ve and, for a flow,
rest_var as string metadata with a format_version.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, safe_open, save_file

from .fit import FAMILIES, StartModel
from .flow import FAMILY as FLOW_FAMILY
from .flow import FlowStart

FORMAT_VERSION = "1"
MIXTURE_TENSORS = ("log_weights", "means", "var", "factors")
FLOW_TENSORS = ("mean", "basis", "coef_std")


def save_start(model: StartModel | FlowStart, path: str | Path) -> None:
    """Write ``model`` to ``path`` (.safetensors)."""
    meta = {"format_version": FORMAT_VERSION, "family": model.family, "shape": json.dumps(list(model.shape)),
            "sigma_ve": repr(model.sigma_ve)}  # fmt: skip
    if isinstance(model, FlowStart):
        tensors = {name: getattr(model, name) for name in FLOW_TENSORS}
        tensors |= {f"params.{k}": v for k, v in model.params.items()}
        meta["rest_var"] = repr(model.rest_var)
    else:
        tensors = {name: getattr(model, name) for name in MIXTURE_TENSORS}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def load_start(path: str | Path) -> StartModel | FlowStart:
    """Read a start model written by save_start; ValueError for another file or format."""
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("format_version") != FORMAT_VERSION or meta.get("family") not in FAMILIES:
        raise ValueError(f"{path} is not a start model file (format_version {meta.get('format_version')!r}, "
                         f"family {meta.get('family')!r}); write one with save_start")  # fmt: skip
    tensors = load_file(str(path))
    head = (meta["family"], tuple(json.loads(meta["shape"])), float(meta["sigma_ve"]))
    if meta["family"] == FLOW_FAMILY:
        params = {k.removeprefix("params."): v for k, v in tensors.items() if k.startswith("params.")}
        return FlowStart(*head, *(tensors[name] for name in FLOW_TENSORS), float(meta["rest_var"]), params)
    return StartModel(*head, *(tensors[name] for name in MIXTURE_TENSORS))
