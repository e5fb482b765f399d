"""Adapter tests run against a real ComfyUI checkout named by COMFYUI_PATH (style.md §7).

The checkout is put first on sys.path (its ``nodes`` module must win over this repo's
``nodes`` package) and ``args.cpu`` is set before any other comfy import. The pack is
imported as the package ``comfyui_epd``, the way ComfyUI imports a custom-node folder.
Without COMFYUI_PATH every adapter module skips at ``pytest.importorskip("comfy")``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACK = "comfyui_epd"


def _use_comfyui() -> None:
    """Put COMFYUI_PATH on sys.path, force CPU, import the pack as a package."""
    checkout = os.environ.get("COMFYUI_PATH")
    if not checkout or not (Path(checkout) / "comfy").is_dir():
        return
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
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


@pytest.fixture(scope="module")
def vae(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A random-weight TAESD written as safetensors and loaded by ComfyUI's own VAE detection."""
    import comfy.sd
    import comfy.taesd.taesd
    import comfy.utils
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    taesd = comfy.taesd.taesd.TAESD(latent_channels=4)  # built with ComfyUI's no-init ops: fill it ourselves
    state = {
        k: (torch.randn_like(v) * 0.05 if v.ndim > 1 else torch.zeros_like(v)) for k, v in taesd.state_dict().items()
    }
    state["vae_scale"] = torch.tensor(1.0)
    path = tmp_path_factory.mktemp("vae") / "taesd_tiny.safetensors"
    save_file(state, str(path))
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))


@pytest.fixture(autouse=True)
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ComfyUI's models folder, per test in tmp: tables the nodes autosave never land in the checkout."""
    if "folder_paths" not in sys.modules:
        return tmp_path
    monkeypatch.setattr(sys.modules["folder_paths"], "models_dir", str(tmp_path))
    return tmp_path
