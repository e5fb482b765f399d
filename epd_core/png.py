"""Grayscale PNGs for the demo and benchmark grids, encoded by Pillow (the ``demo``/``bench`` extras).

Pillow is imported when a PNG is written, so ``import epd_core`` keeps needing only torch,
numpy and safetensors; ComfyUI itself already ships Pillow.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .atomic import atomic_write


def encode_png(gray: np.ndarray) -> bytes:
    """8-bit grayscale PNG bytes of an [H, W] array of values in [0, 1]."""
    from PIL import Image  # optional extra, imported here (see the module docstring)

    pixels = (np.clip(gray, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)  # uint8 [H, W] is mode "L"
    return buffer.getvalue()


def write_png(path: str | Path, gray: np.ndarray) -> None:
    """Write atomically: a temp file in the same folder, then os.replace."""
    atomic_write(path, encode_png(gray))
