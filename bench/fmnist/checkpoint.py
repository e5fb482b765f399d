"""Weight files for the Fashion-MNIST fixtures: safetensors with JSON string metadata, never pickles.

A file holds a module's ``state_dict`` and three metadata keys: ``format`` (which model family),
``format_version``, and ``config`` (the JSON the architecture is rebuilt from). Every other key is
provenance (training options, steps, final loss, data) stored as JSON strings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _st_save

from epd_core.atomic import atomic_write

FORMAT_VERSION = "1"


def save_module(
    path: str | os.PathLike[str],
    module: torch.nn.Module,
    fmt: str,
    config: Mapping[str, Any],
    info: Mapping[str, Any],
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``module``'s floating-point state as ``dtype`` atomically (epd_core.atomic.atomic_write)."""
    path = Path(path)
    tensors = {}
    for name, stored in module.state_dict().items():
        value = stored.detach().cpu()
        tensors[name] = (value.to(dtype) if value.is_floating_point() else value).contiguous()
    meta = {"format": fmt, "format_version": FORMAT_VERSION, "config": json.dumps(dict(config), sort_keys=True)}
    meta |= {key: json.dumps(value) for key, value in info.items()}
    return atomic_write(path, _st_save(tensors, metadata=meta))


def read_checkpoint(
    path: str | os.PathLike[str], fmt: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(float32 state dict, config, info) of a file written by ``save_module`` with format ``fmt``."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: weights load only from .safetensors files (a pickle can run code on load)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file; train it with the command in bench/fmnist/README.md")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except SafetensorError as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if meta.get("format") != fmt or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format {meta.get('format')!r} version {meta.get('format_version')!r}, "
            f"expected {fmt!r} version {FORMAT_VERSION!r}"
        )
    if "config" not in meta:
        raise ValueError(f"{path}: metadata has no 'config' entry to rebuild the network from")
    config = json.loads(meta["config"])
    info = {k: json.loads(v) for k, v in meta.items() if k not in ("format", "format_version", "config")}
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, config, info


def load_state_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Load ``state`` into ``module``; any missing, extra or misshapen tensor is an error naming ``path``."""
    own = module.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise ValueError(f"{path}: weights do not match the stored config: " + "; ".join(problems[:8]))
    module.load_state_dict(dict(state))
