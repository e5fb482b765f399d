"""A real ComfyUI server (main.py --cpu) with the pack in its custom_nodes.

The server gets its own --base-directory (custom_nodes, models, input, output, user), so
nothing is written into the checkout. Prompts use only non-model nodes: a MODEL needs a
checkpoint, which CI does not have. EPD_KSAMPLER_ENTRY=1 is set to check the dropdown entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from comfy_server import Server, request, running_server

ROOT = Path(__file__).resolve().parents[2]
SIGMAS = "14.61, 6.08, 2.23, 0.69, 0.17, 0.029, 0"


@pytest.fixture(scope="module")
def server(comfyui: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("comfy_base")
    packs = {"ComfyUI-EPD": ROOT}
    with running_server(comfyui, base, packs, "/object_info/EPD_Sampler", {"EPD_KSAMPLER_ENTRY": "1"}) as srv:
        yield srv


def test_pack_imports_cleanly(server: Server) -> None:
    lines = [line for line in server.log.read_text().splitlines() if "ComfyUI-EPD" in line]
    assert lines, "the import-times list names the pack"
    assert not any("IMPORT FAILED" in line for line in lines), lines


def test_object_info_serves_the_nodes(server: Server) -> None:
    info = server.get("/object_info")
    epd = {k: v for k, v in info.items() if k.startswith("EPD_")}
    assert (
        len(epd) == 23
        and {"EPD_LagrangeSampler", "EPD_ScalewiseSchedule", "EPD_ScalewiseSampler"} <= set(epd)
        and {"EPD_FitStart", "EPD_SampleStart", "EPD_TruncateSigmas", "EPD_SuggestSigmaStar"} <= set(epd)
        and all(v["category"].startswith("sampling/custom_sampling/epd") for v in epd.values())
    )
    assert epd["EPD_Sampler"]["output"] == ["SAMPLER"]
    assert "table" in epd["EPD_Sampler"]["input"]["optional"]


def test_ksampler_entry_is_offered_when_enabled(server: Server) -> None:
    options = server.get("/object_info/KSampler")["KSampler"]["input"]["required"]["sampler_name"][0]
    assert options.count("epd") == 1 and options[-1] == "epd"


def test_prompt_saves_and_reloads_tables(server: Server) -> None:
    from epd_core.table_io import load_table

    first = server.run(
        {
            "1": {"class_type": "ManualSigmas", "inputs": {"sigmas": SIGMAS}},
            "2": {
                "class_type": "EPD_DefaultTable",
                "inputs": {
                    "sigmas": ["1", 0],
                    "num_points": 3,
                    "kind": "uniform",
                    "form": "direction",
                    "afs": False,
                    "tail": "drop",
                },
            },
            "3": {"class_type": "EPD_SaveTable", "inputs": {"table": ["2", 0], "name": "http_test", "overwrite": True}},
        }
    )
    assert first["status"]["status_str"] == "success", first["status"]
    assert "http_test.safetensors" in first["outputs"]["3"]["text"][0]
    saved = load_table(server.base / "models" / "epd" / "http_test.safetensors")
    assert (saved.num_steps, saved.num_points) == (5, 3)

    second = server.run(
        {
            "1": {"class_type": "EPD_LoadTable", "inputs": {"table_name": "http_test.safetensors"}},
            "2": {"class_type": "EPD_Table", "inputs": {"table_json": "", "table": ["1", 0]}},
            "3": {"class_type": "EPD_SaveTable", "inputs": {"table": ["2", 0], "name": "http_copy", "overwrite": True}},
        }
    )
    assert second["status"]["status_str"] == "success", second["status"]
    shown = second["outputs"]["2"]["text"][0]
    copy = load_table(server.base / "models" / "epd" / "http_copy.safetensors")
    assert torch.equal(copy.r_logits, saved.r_logits) and json.loads(shown)["num_steps"] == 5

    third = server.run(
        {
            "1": {"class_type": "EPD_Table", "inputs": {"table_json": shown}},
            "2": {
                "class_type": "EPD_SaveTable",
                "inputs": {"table": ["1", 0], "name": "http_inline", "overwrite": True},
            },
        }
    )
    assert third["status"]["status_str"] == "success", third["status"]
    inline = load_table(server.base / "models" / "epd" / "http_inline.safetensors")
    assert torch.equal(inline.sigmas, saved.sigmas)


def test_bad_inputs_are_rejected_with_the_node_name(server: Server) -> None:
    status, data = request(
        server.url + "/prompt",
        {
            "prompt": {
                "1": {"class_type": "ManualSigmas", "inputs": {"sigmas": SIGMAS}},
                "2": {
                    "class_type": "EPD_DefaultTable",
                    "inputs": {
                        "sigmas": ["1", 0],
                        "num_points": 2,
                        "kind": "uniform",
                        "form": "data",
                        "afs": False,
                        "tail": "drop",
                    },
                },
                "3": {
                    "class_type": "EPD_SaveTable",
                    "inputs": {"table": ["2", 0], "name": "../escape", "overwrite": True},
                },
            }
        },
    )
    assert status == 400
    assert "EPD Save Table: name '../escape'" in json.dumps(data["node_errors"])
    failed = server.run(
        {
            "1": {"class_type": "EPD_Table", "inputs": {"table_json": "{oops"}},
            "2": {"class_type": "EPD_SaveTable", "inputs": {"table": ["1", 0], "name": "never", "overwrite": False}},
        }
    )
    assert failed["status"]["status_str"] == "error"
    assert "EPD Table: EPD table JSON is not valid JSON" in json.dumps(failed["status"]["messages"])
