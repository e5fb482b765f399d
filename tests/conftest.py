"""Suite-wide set-up: the ComfyUI checkout named by COMFYUI_PATH, and ``gpu`` skips.

With COMFYUI_PATH set, the checkout goes first on sys.path (its ``nodes`` module must win over
this repo's ``nodes`` package), ``args.cpu`` is set before any other comfy import, and the pack
is imported as the package ``comfyui_epd``, the way ComfyUI imports a custom-node folder. This
runs once, here, for the adapter, integration and toy tests. Without COMFYUI_PATH those tests
skip (``pytest.importorskip("comfy")`` or the ``comfyui`` fixture).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACK = "comfyui_epd"


def comfyui_checkout() -> Path | None:
    """COMFYUI_PATH when it names a ComfyUI checkout."""
    checkout = os.environ.get("COMFYUI_PATH")
    if checkout and (Path(checkout) / "comfy").is_dir() and (Path(checkout) / "main.py").is_file():
        return Path(checkout).resolve()
    return None


def _use_comfyui() -> None:
    """Put the checkout first on sys.path, force CPU, import the pack as a package."""
    checkout = comfyui_checkout()
    if checkout is None:
        return
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from comfy.cli_args import args

    args.cpu = True
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)


_use_comfyui()


@pytest.fixture(scope="session")
def comfyui() -> Path:
    """The ComfyUI checkout (the tests skip without one)."""
    checkout = comfyui_checkout()
    if checkout is None:
        pytest.skip("set COMFYUI_PATH to a ComfyUI checkout")
    return checkout


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """tests/integration is marked ``integration`` and skips without a checkout; ``gpu`` tests skip without CUDA."""
    integration = ROOT / "tests" / "integration"
    no_checkout = pytest.mark.skip(reason="set COMFYUI_PATH to a ComfyUI checkout")
    for item in items:
        if integration in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
            if comfyui_checkout() is None:
                item.add_marker(no_checkout)
    if not any("gpu" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
