"""Toy-model tests run against a real ComfyUI checkout named by COMFYUI_PATH (style.md §7).

The checkout goes first on sys.path (its ``nodes`` module must win over this repo's
``nodes`` package) and ``args.cpu`` is set before any other comfy import. Without
COMFYUI_PATH the test modules skip at ``pytest.importorskip("comfy")``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def _use_comfyui() -> None:
    checkout = os.environ.get("COMFYUI_PATH")
    if not checkout or not (Path(checkout) / "comfy").is_dir():
        return
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    from comfy.cli_args import args

    args.cpu = True


_use_comfyui()


@pytest.fixture(scope="session")
def digits():
    """The digits mixture, fitted once for the whole session (about 6 s)."""
    from epd_core.digits import digits_mixture

    return digits_mixture()
