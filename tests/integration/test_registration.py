"""The pack registers through ComfyUI's own loader, nodes.load_custom_node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_IDS = {
    "EPD_Sampler": "EPD Sampler",
    "EPD_Sigmas": "EPD Sigmas",
    "EPD_DefaultTable": "EPD Default Table",
    "EPD_LoadTable": "EPD Load Table",
    "EPD_SaveTable": "EPD Save Table",
    "EPD_Table": "EPD Table",
    "EPD_ImportUpstreamTable": "EPD Import Upstream Table",
}


def test_load_custom_node_registers_every_node(comfyui: Path, tmp_path: Path) -> None:
    import nodes

    assert Path(nodes.__file__).resolve().parent == comfyui, "ComfyUI's nodes.py, not this repo's nodes/"
    pack = tmp_path / "ComfyUI-EPD"  # the folder name a user's custom_nodes entry has
    pack.symlink_to(ROOT, target_is_directory=True)
    assert asyncio.run(nodes.load_custom_node(str(pack))) is True
    for node_id, display in NODE_IDS.items():
        cls = nodes.NODE_CLASS_MAPPINGS[node_id]
        assert nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] == display
        assert cls.GET_NODE_INFO_V1()["category"] == "sampling/custom_sampling/epd"
    assert nodes.EXTENSION_WEB_DIRS["ComfyUI-EPD"] == str(pack / "web")
    import folder_paths

    paths, exts = folder_paths.folder_names_and_paths["epd"]
    assert paths[0] == str(Path(folder_paths.models_dir) / "epd") and exts == {".safetensors"}


@pytest.mark.parametrize("name", ["nodes", "epd_core"])
def test_pack_imports_itself_only_relatively(name: str) -> None:
    # ComfyUI never puts a pack's folder on sys.path, so `import epd_core` would fail there.
    for path in [ROOT / "__init__.py", *(ROOT / "nodes").glob("*.py")]:
        text = path.read_text()
        assert f"from {name}" not in text and f"import {name}" not in text, path
