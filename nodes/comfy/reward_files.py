"""Reward model folders and safe file checks (docs/rewards.md).

Two folder_paths keys, both under models/epd_rewards (extra_model_paths.yaml may add more paths):

* ``epd_aesthetic`` = models/epd_rewards/aesthetic: LAION aesthetic heads, one .safetensors each;
* ``epd_clip`` = models/epd_rewards/clip: one transformers CLIP folder per model (PickScore, CLIP, HPS).

Weights are read with safetensors only. Pickle files (.pt, .pth, .bin, .pkl, .ckpt) are listed
so that picking one explains how to convert it, but they are never opened.
"""

from __future__ import annotations

import os

import folder_paths
from safetensors import SafetensorError
from safetensors.torch import load_file

from ...epd_core.table_io import PICKLE_SUFFIXES, looks_like_pickle
from . import folders

AESTHETIC = "epd_aesthetic"
CLIP = "epd_clip"
SUBFOLDERS = {AESTHETIC: os.path.join("epd_rewards", "aesthetic"), CLIP: os.path.join("epd_rewards", "clip")}
HEAD_EXTENSIONS = {".safetensors", *PICKLE_SUFFIXES}
CONVERT_HINT = (
    'convert it once, in an environment you trust, with: python -c "import torch, safetensors.torch as s; '
    "sd = torch.load('{src}', map_location='cpu', weights_only=True); "
    "s.save_file({{k: v.contiguous() for k, v in sd.items()}}, '{dst}')\" (see docs/rewards.md)"
)


def default_dir(key: str) -> str:
    """models/epd_rewards/<kind> of this ComfyUI install."""
    return os.path.join(folder_paths.models_dir, SUBFOLDERS[key])


def register_reward_folders() -> None:
    """Add the two reward folders as default paths of their keys; idempotent, keeps yaml-added paths."""
    for key, extensions in ((AESTHETIC, HEAD_EXTENSIONS), (CLIP, {".safetensors"})):
        folders.register(key, default_dir(key), extensions)


def head_names() -> list[str]:
    """Aesthetic head files (combo options), relative to their folder."""
    register_reward_folders()
    return folder_paths.get_filename_list(AESTHETIC)


def head_path(name: str, node: str) -> str:
    """Full path of a listed aesthetic head, or a ValueError saying where it should be."""
    register_reward_folders()
    path = folder_paths.get_full_path(AESTHETIC, name)
    if path is None:
        raise ValueError(
            f"{node}: no aesthetic head {name!r} in {default_dir(AESTHETIC)}; put the LAION aesthetic predictor there "
            "as .safetensors (docs/rewards.md, 'Aesthetic') and refresh the node"
        )
    return path


def clip_model_names() -> list[str]:
    """Model folders (with a config.json) directly inside every ``epd_clip`` path (combo options)."""
    register_reward_folders()
    names = set()
    for root in folder_paths.get_folder_paths(CLIP):
        if os.path.isdir(root):
            names.update(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))
    return sorted(names)


def clip_model_dir(name: str, node: str) -> str:
    """The folder of a CLIP-style reward model, or a ValueError naming where it was expected."""
    register_reward_folders()
    if not name or os.path.basename(name) != name or name in (".", ".."):
        raise ValueError(f"{node}: {name!r} is not a model folder name; pick one from the list")
    roots = folder_paths.get_folder_paths(CLIP)
    for root in roots:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise ValueError(
        f"{node}: no model folder {name!r} in {', '.join(roots)}; expected {os.path.join(roots[0], name)} holding "
        "config.json, model.safetensors and the tokenizer files (docs/rewards.md says where to get them)"
    )


def refuse_pickle(path: str, node: str) -> None:
    """Raise for a pickle weight file: the pack never unpickles; say how to convert it."""
    if path.lower().endswith(PICKLE_SUFFIXES):
        dst = os.path.splitext(path)[0] + ".safetensors"
        raise ValueError(
            f"{node}: {path} is a pickle file; it is never loaded because unpickling can run code. "
            + CONVERT_HINT.format(src=os.path.basename(path), dst=os.path.basename(dst))
        )


def starts_like_pickle(path: str) -> bool:
    """True if a file starts like a torch.save archive (zip) or a raw pickle (protocol >= 2)."""
    with open(path, "rb") as fh:
        return looks_like_pickle(fh.read(4))


def load_safetensors(path: str, node: str) -> dict:
    """The tensors of a .safetensors file on the CPU; pickles and malformed files raise a ValueError naming it."""
    refuse_pickle(path, node)
    if not os.path.isfile(path):
        raise ValueError(f"{node}: {path} does not exist")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        hint = (
            "it looks like a PyTorch pickle renamed to .safetensors; " + CONVERT_HINT.format(src=path, dst=path)
            if starts_like_pickle(path)
            else "re-download or re-convert it"
        )
        raise ValueError(f"{node}: {path} is not a valid .safetensors file ({err}); {hint}") from err


def folder_stamp(path: str) -> str:
    """Cache key for a model folder or file: names, sizes and modification times (cheap for GBs of weights)."""
    if os.path.isfile(path):
        stat = os.stat(path)
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    if not os.path.isdir(path):
        return path
    parts = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_file():
            stat = entry.stat()
            parts.append(f"{entry.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return path + "|" + ",".join(parts)
