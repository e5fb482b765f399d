"""Table nodes and the epd model folder."""

from __future__ import annotations

import os
import pickle

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import folder_paths
import torch
from comfyui_epd.epd_core.table_io import load_table, save_table, table_to_json
from comfyui_epd.epd_core.tables import default_table
from comfyui_epd.nodes import file_nodes
from comfyui_epd.nodes.comfy import folders
from comfyui_epd.nodes.file_nodes import EPDImportUpstreamTable, EPDLoadTable, EPDSaveTable
from comfyui_epd.nodes.table_nodes import EPDDefaultTable, EPDTable

GRID = torch.tensor([14.6, 6.0, 2.2, 0.7, 0.17, 0.03, 0.0], dtype=torch.float64)


@pytest.fixture
def epd_dir(tmp_path, monkeypatch):
    """A private models dir; the real folder registry is restored afterwards."""
    registry = {k: v for k, v in folder_paths.folder_names_and_paths.items() if k != "epd"}
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", registry)
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path / "input"))
    return tmp_path / "models" / "epd"


def table(**kw):
    return default_table(GRID[:-2].clone() if kw.pop("short", False) else GRID, 2, **kw)


def text_of(output) -> str:
    return output.ui.as_dict()["text"][0]


# --- folder registration --------------------------------------------------------------------


def test_folder_registration_is_idempotent(epd_dir):
    folders.register_folder()
    folders.register_folder()
    paths, exts = folder_paths.folder_names_and_paths["epd"]
    assert paths == [str(epd_dir)] and exts == {".safetensors"}


def test_folder_registration_respects_extra_model_paths(epd_dir, tmp_path):
    folder_paths.add_model_folder_path("epd", str(tmp_path / "shared_tables"))  # what the yaml loader does
    folders.register_folder()
    paths, exts = folder_paths.folder_names_and_paths["epd"]
    assert paths == [str(epd_dir), str(tmp_path / "shared_tables")] and exts == {".safetensors"}


def test_only_safetensors_are_listed(epd_dir):
    save_table(table(), epd_dir / "a.safetensors")
    (epd_dir / "b.pkl").write_bytes(b"\x80\x04N.")
    assert folders.table_names() == ["a.safetensors"]


# --- save / load -----------------------------------------------------------------------------


def test_save_then_load(epd_dir):
    original = table(afs=True)
    out = EPDSaveTable.execute(table=original, name="sd15 test.safetensors")
    assert "sd15 test.safetensors" in text_of(out)
    loaded = EPDLoadTable.execute(table_name="sd15 test.safetensors")[0]
    assert torch.equal(loaded.r, original.r) and torch.equal(loaded.sigmas, original.sigmas) and loaded.afs
    assert "sd15 test.safetensors" in EPDLoadTable.define_schema().inputs[0].options


def test_save_refuses_to_overwrite_unless_asked(epd_dir):
    EPDSaveTable.execute(table=table(), name="t")
    with pytest.raises(ValueError, match=r"EPD Save Table: .*t.safetensors already exists; turn on overwrite"):
        EPDSaveTable.execute(table=table(short=True), name="t")
    EPDSaveTable.execute(table=table(short=True), name="t", overwrite=True)
    assert load_table(epd_dir / "t.safetensors").num_steps == 4


@pytest.mark.parametrize("name", ["", "../escape", "sub/dir", "a" * 200, "."])
def test_save_names_are_validated(name):
    message = EPDSaveTable.validate_inputs(name=name)
    assert isinstance(message, str) and message.startswith("EPD Save Table: name")
    assert EPDSaveTable.validate_inputs(name="sd15_epd-8.v2") is True


def test_load_fingerprint_follows_file_content(epd_dir):
    save_table(table(), epd_dir / "f.safetensors")
    first = EPDLoadTable.fingerprint_inputs(table_name="f.safetensors")
    save_table(table(short=True), epd_dir / "f.safetensors")
    assert EPDLoadTable.fingerprint_inputs(table_name="f.safetensors") != first
    assert EPDLoadTable.validate_inputs(table_name="f.safetensors") is True
    assert "no table 'gone.safetensors'" in EPDLoadTable.validate_inputs(table_name="gone.safetensors")


def test_load_errors_name_the_node(epd_dir):
    epd_dir.mkdir(parents=True)
    with open(epd_dir / "evil.safetensors", "wb") as fh:
        pickle.dump({"x": 1}, fh)
    with pytest.raises(ValueError, match=r"EPD Load Table: refusing to unpickle .*epd_core.upstream"):
        EPDLoadTable.execute(table_name="evil.safetensors")
    with pytest.raises(ValueError, match=r"EPD Load Table: no table 'missing.safetensors'"):
        EPDLoadTable.execute(table_name="missing.safetensors")


# --- inline table and default table ------------------------------------------------------------


def test_inline_table_round_trip():
    original = table(kind="uniform", form="direction")
    shown = EPDTable.execute(table_json="", table=original)
    assert shown[0] is original
    pasted = EPDTable.execute(table_json=text_of(shown))[0]
    assert table_to_json(pasted) == table_to_json(original)
    assert torch.equal(pasted.r_logits, original.r_logits) and dict(pasted.metadata) == dict(original.metadata)


def test_inline_table_errors():
    with pytest.raises(ValueError, match=r"EPD Table: the text box is empty"):
        EPDTable.execute(table_json="  \n")
    with pytest.raises(ValueError, match=r"EPD Table: EPD table JSON is not valid JSON"):
        EPDTable.execute(table_json="{not json")


def test_default_table_node_applies_the_tail():
    made = {tail: EPDDefaultTable.execute(sigmas=GRID.float(), tail=tail)[0] for tail in ("drop", "stop", "keep")}
    assert [made[t].num_steps for t in ("drop", "stop", "keep")] == [5, 5, 6]
    assert float(made["drop"].sigmas[-1]) == 0.0 and float(made["stop"].sigmas[-1]) == pytest.approx(0.03)
    uniform = EPDDefaultTable.execute(sigmas=GRID, num_points=3, kind="uniform", form="direction", afs=True)[0]
    assert uniform.num_points == 3 and uniform.afs and uniform.metadata["form"] == "direction"
    with pytest.raises(ValueError, match=r"EPD Default Table: .*descending"):
        EPDDefaultTable.execute(sigmas=torch.tensor([1.0, 2.0, 3.0]), tail="keep")


# --- upstream import ----------------------------------------------------------------------------


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_import_refuses_code_and_names_the_node(epd_dir, tmp_path):
    evil = tmp_path / "input" / "evil.pkl"
    evil.parent.mkdir(parents=True, exist_ok=True)
    evil.write_bytes(pickle.dumps({"model": _Boom()}))
    with pytest.raises(ValueError, match=r"EPD Import Upstream Table: .*refusing global"):
        EPDImportUpstreamTable.execute(path="evil.pkl")
    with pytest.raises(ValueError, match=r"EPD Import Upstream Table: path is empty"):
        EPDImportUpstreamTable.execute(path=" ")
    with pytest.raises(ValueError, match=r"EPD Import Upstream Table: upstream EPD pickle not found"):
        EPDImportUpstreamTable.execute(path="nowhere.pkl")


def test_import_resolves_input_paths_and_saves(epd_dir, tmp_path, monkeypatch):
    seen = {}

    def fake_import(path, *, sigmas=None):
        seen["path"], seen["sigmas"] = path, sigmas
        return table()

    monkeypatch.setattr(file_nodes, "import_upstream_table", fake_import)
    out = EPDImportUpstreamTable.execute(path="sd15-best.pkl", save_as="sd15-best", sigmas=GRID.float())
    assert seen["path"] == str(tmp_path / "input" / "sd15-best.pkl")
    assert seen["sigmas"].dtype == torch.float64
    assert "saved sd15-best.safetensors" in text_of(out)
    assert load_table(epd_dir / "sd15-best.safetensors").num_steps == out[0].num_steps


@pytest.mark.parametrize("path", ["/etc/passwd", "../secret.pkl", "epd/../../x.pkl"])
def test_import_refuses_paths_outside_the_input_folder(epd_dir, path):
    with pytest.raises(ValueError, match=r"EPD Import Upstream Table: the path .* leaves ComfyUI's input folder"):
        EPDImportUpstreamTable.execute(path=path)
