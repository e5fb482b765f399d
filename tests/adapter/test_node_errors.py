"""Every error a node raises names the node and shows folder-relative paths (issue 13)."""

from __future__ import annotations

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfy.model_management
import folder_paths
from comfyui_epd.nodes.errors import node_errors
from comfyui_epd.nodes.file_nodes import EPDLoadTable


def test_any_exception_gets_the_node_name_and_its_cause():
    with pytest.raises(RuntimeError, match=r"^EPD Test: KeyError: 'options'$") as info, node_errors("EPD Test"):
        raise KeyError("options")
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ValueError, match=r"^EPD Test: bad value$"), node_errors("EPD Test"):
        raise TypeError("bad value")


def test_cancel_and_out_of_memory_pass_through_untouched():
    for err in (comfy.model_management.InterruptProcessingException(), comfy.model_management.OOM_EXCEPTION("oom")):
        with pytest.raises(type(err)) as info, node_errors("EPD Test"):
            raise err
        assert info.value is err


def test_messages_show_paths_relative_to_comfyui_folders(models_dir):
    where = f"{folder_paths.models_dir}/epd/a.safetensors and {folder_paths.get_input_directory()}/epd/b.pkl"
    with pytest.raises(ValueError) as info, node_errors("EPD Test"):
        raise ValueError(f"cannot read {where}")
    assert str(info.value) == "EPD Test: cannot read models/epd/a.safetensors and input/epd/b.pkl"


def test_load_table_accepts_only_what_its_list_offers(models_dir):
    from comfyui_epd.epd_core.grids import epd_sigmas
    from comfyui_epd.epd_core.table_io import save_table
    from comfyui_epd.epd_core.tables import default_table

    save_table(default_table(epd_sigmas(3, 0.002, 80.0), 2), models_dir / "epd" / "ok.safetensors")
    (models_dir / "epd" / "sub").mkdir()
    (models_dir / "epd" / "other.bin").write_bytes(b"\x80\x04")
    assert EPDLoadTable.validate_inputs("ok.safetensors") is True
    for name in ("sub/../ok.safetensors", "other.bin", "../epd/ok.safetensors"):
        assert "no table" in EPDLoadTable.validate_inputs(name), name
        with pytest.raises(ValueError, match="no table"):
            EPDLoadTable.execute(name)
