"""Integration tests load the pack into a real ComfyUI (COMFYUI_PATH) or start its server (style.md §7).

Everything here is marked ``integration`` and skips when COMFYUI_PATH is not a ComfyUI
checkout. As in the adapter tests, the checkout goes first on sys.path (its ``nodes``
module must win over this repo's ``nodes`` package) and ``args.cpu`` is set before
other comfy imports.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def comfyui_checkout() -> Path | None:
    """COMFYUI_PATH when it names a ComfyUI checkout."""
    checkout = os.environ.get("COMFYUI_PATH")
    if checkout and (Path(checkout) / "comfy").is_dir() and (Path(checkout) / "main.py").is_file():
        return Path(checkout).resolve()
    return None


def _use_comfyui() -> None:
    checkout = comfyui_checkout()
    if checkout is None:
        return
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from comfy.cli_args import args

    args.cpu = True


_use_comfyui()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this folder's tests ``integration``; skip them without a checkout."""
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="set COMFYUI_PATH to a ComfyUI checkout")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
            if comfyui_checkout() is None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def comfyui() -> Path:
    """The ComfyUI checkout (the tests skip without one)."""
    checkout = comfyui_checkout()
    if checkout is None:
        pytest.skip("set COMFYUI_PATH to a ComfyUI checkout")
    return checkout
