"""Adapter fixtures; tests/conftest.py sets up ComfyUI and imports the pack as comfyui_epd.

Without COMFYUI_PATH every adapter module skips at ``pytest.importorskip("comfy")``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest


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
    """ComfyUI's models folder, per test in tmp: tables the nodes autosave never land in the checkout.

    The folder registry and its cache are copied too, so a folder registered under the tmp
    models dir does not outlive the test.
    """
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None:
        return tmp_path
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    registry = {name: (list(paths), set(exts)) for name, (paths, exts) in folder_paths.folder_names_and_paths.items()}
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", registry)
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return tmp_path
