"""A dependency-free grayscale PNG writer for the demo grid."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from .atomic import atomic_write


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(gray: np.ndarray) -> bytes:
    """8-bit grayscale PNG bytes of an [H, W] array of values in [0, 1]."""
    pixels = (np.clip(gray, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b"")
    )


def write_png(path: str | Path, gray: np.ndarray) -> None:
    """Write atomically: a temp file in the same folder, then os.replace."""
    atomic_write(path, encode_png(gray))
