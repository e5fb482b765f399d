"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, read with numpy (no torchvision).

The idx format (LeCun et al.) is a big-endian header, a magic number whose last byte is the
number of dimensions, one uint32 per dimension, then the raw uint8 values.
The images are 70,000 real 28x28 grayscale photos of clothing (Xiao et al. 2017, MIT licence).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "FASHION_MNIST_DIR"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_PREFIX = {"train": "train", "test": "t10k"}
Split = Literal["train", "test"]


class FashionMNIST(NamedTuple):
    """One split: ``images`` [N, 1, 28, 28] (or 32x32 when padded) float32 in [-1, 1]; ``labels`` [N] int64."""

    images: torch.Tensor
    labels: torch.Tensor


def data_dir() -> Path:
    """The folder holding the idx files: ``$FASHION_MNIST_DIR`` when set, else the Debian package's."""
    return Path(os.environ.get(ENV_VAR) or DEBIAN_DIR)


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {folder}. Install the Debian package "
        f"(apt-get install dataset-fashion-mnist), or set {ENV_VAR} to a folder holding the idx files."
    )


def read_idx(path: str | Path) -> np.ndarray:
    """The uint8 array stored in one idx file (gzipped or not)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file: magic bytes {raw[:4].hex()!r}, expected 000008xx")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} ({int(np.prod(shape))} values), file holds {body.size}")
    return body.reshape(shape)


def to_unit_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels [N, 28, 28] -> float32 [N, 1, 28, 28] in [-1, 1] (0 -> -1, 255 -> 1)."""
    return torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)


def load_split(split: Split = "train", *, pad_to_32: bool = False, limit: int | None = None) -> FashionMNIST:
    """Load ``split`` ("train": 60,000 images, "test": 10,000). ``pad_to_32`` adds a 2-pixel -1 border."""
    if split not in _PREFIX:
        raise ValueError(f"split must be one of {sorted(_PREFIX)}, got {split!r}")
    folder = data_dir()
    pixels = read_idx(_find(folder, f"{_PREFIX[split]}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{_PREFIX[split]}-labels-idx1-ubyte"))
    if pixels.shape[0] != labels.shape[0] or pixels.shape[1:] != (28, 28):
        raise ValueError(f"{folder}: images {pixels.shape} and labels {labels.shape} do not form a 28x28 split")
    if limit is not None:
        pixels, labels = pixels[:limit], labels[:limit]
    images = to_unit_range(pixels)
    if pad_to_32:
        images = torch.nn.functional.pad(images, (2, 2, 2, 2), value=-1.0)
    return FashionMNIST(images, torch.from_numpy(labels.astype(np.int64)))


def available() -> bool:
    """Whether both splits can be found (tests skip when not)."""
    try:
        folder = data_dir()
        for prefix in _PREFIX.values():
            _find(folder, f"{prefix}-images-idx3-ubyte")
            _find(folder, f"{prefix}-labels-idx1-ubyte")
    except FileNotFoundError:
        return False
    return True
