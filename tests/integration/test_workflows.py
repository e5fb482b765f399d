"""Every shipped workflow loads against a real ComfyUI, and the toy one runs.

The example workflows (workflows/*.json) and the test-only ones (tests/integration/workflows/)
are UI-format files as the 1.41 frontend saves them. Each is checked against a running
server's /object_info: node types exist, links agree with both ends and with the node
schemas, and widgets_values line up with the widget inputs (plus the frontend's
control_after_generate values). The toy workflow is then converted to an API prompt,
compared with what the frontend itself produced for it (epd_toy_cpu.api.json, from
app.graphToPrompt()), and queued on the server with testing_nodes loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from comfy_server import Server, running_server
from ui_prompt import (
    FRONTEND_ONLY,
    has_control,
    input_specs,
    spec_options,
    spec_type,
    to_api_prompt,
    widget_inputs,
    widget_values_by_name,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "workflows").glob("*.json"))
TEST_ONLY = sorted(p for p in (Path(__file__).parent / "workflows").glob("*.json") if not p.name.endswith(".api.json"))
TOY = Path(__file__).parent / "workflows" / "epd_toy_cpu.json"
CORE_MODULES = ("nodes", "comfy_extras.")
PACK_MODULE = "custom_nodes.ComfyUI-EPD"
MODEL_FILE = re.compile(r"\.(safetensors|sft|ckpt|pt|pth|bin|gguf)$")


@pytest.fixture(scope="module")
def server(comfyui: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("comfy_workflows")
    packs = {"ComfyUI-EPD": ROOT, "epd_testing_nodes": ROOT / "testing_nodes"}
    with running_server(comfyui, base, packs, "/object_info/EPDTest_ToyModel", {}) as srv:
        yield srv


@pytest.fixture(scope="module")
def object_info(server: Server) -> dict[str, Any]:
    return server.get("/object_info")


# --- schema checks (the frontend's rules, comfyui-frontend-package 1.41.21) ---------------------


def expected_widget_count(info: dict[str, Any]) -> int:
    return sum(1 + has_control(name, spec) for name, spec in widget_inputs(info))


def combo_options(spec: list[Any]) -> list[Any]:
    return spec[0] if isinstance(spec[0], list) else spec_options(spec).get("options", [])


def check_widget_value(where: str, name: str, spec: list[Any], value: Any) -> None:
    kind, opts = spec_type(spec), spec_options(spec)
    if kind == "COMBO":
        # file lists (checkpoints, VAEs, tables) depend on the user's models folders; the rest must match
        if not MODEL_FILE.search(str(value)):
            assert value in combo_options(spec), f"{where}: {name}={value!r} is not one of {combo_options(spec)}"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {name}={value!r} is not a boolean"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {name}={value!r} is not a string"
        assert not re.match(r"^(/|~|[A-Za-z]:[\\/])", value), f"{where}: {name}={value!r} is an absolute path"
    else:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {name}={value!r}"
        assert kind != "INT" or float(value).is_integer(), f"{where}: {name}={value!r} is not an integer"
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{where}: {name}={value!r} out of range"


# --- tests ---------------------------------------------------------------------------------------


def test_the_expected_workflows_ship() -> None:
    names = {p.name for p in EXAMPLES}
    assert names == {
        "SD1.5 text to image.json",
        "SDXL text to image.json",
        "SD1.5 EPD-Plugin.json",
        "SD1.5 Lagrange sampler.json",
        "SD3 text to image.json",
        "Keep a table in a file or the workflow.json",
        "Import an upstream EPD predictor.json",
        "SD1.5 distill a table then sample.json",
        "SD1.5 RL tune a table with a reward.json",
        "SD1.5 skip the middle.json",
        "SD1.5 scale-wise sampling.json",
    }
    assert [p.name for p in TEST_ONLY] == ["epd_toy_cpu.json"]


@pytest.mark.parametrize("path", EXAMPLES + TEST_ONLY, ids=lambda p: p.name)
def test_workflow_is_ui_format_with_consistent_links(path: Path) -> None:
    wf = json.loads(path.read_text(encoding="utf-8"))
    assert {"last_node_id", "last_link_id", "nodes", "links", "version"} <= set(wf), path.name
    nodes = {node["id"]: node for node in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "node ids are unique"
    assert max(nodes) <= wf["last_node_id"]
    assert not wf["links"] or max(link[0] for link in wf["links"]) <= wf["last_link_id"]
    link_ids = set()
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        link_ids.add(link_id)
        out = nodes[src]["outputs"][src_slot]
        assert link_id in (out.get("links") or []) and out["type"] == kind, (path.name, link_id)
        entry = nodes[dst]["inputs"][dst_slot]
        assert entry["link"] == link_id and entry["type"] in (kind, "*"), (path.name, link_id, entry)
    for node in wf["nodes"]:
        for entry in node.get("inputs", []):
            assert entry.get("link") is None or entry["link"] in link_ids, (path.name, node["id"], entry)
        for out in node.get("outputs", []):
            assert set(out.get("links") or []) <= link_ids, (path.name, node["id"], out)


@pytest.mark.parametrize("path", EXAMPLES + TEST_ONLY, ids=lambda p: p.name)
def test_workflow_matches_the_node_schemas(path: Path, object_info: dict[str, Any]) -> None:
    wf = json.loads(path.read_text(encoding="utf-8"))
    nodes = {node["id"]: node for node in wf["nodes"]}
    for node in wf["nodes"]:
        where = f"{path.name} node {node['id']} ({node['type']})"
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in object_info, f"{where}: unknown node type"
        info = object_info[node["type"]]
        if path in EXAMPLES:
            module = info["python_module"]
            assert module.startswith(CORE_MODULES) or module == PACK_MODULE, f"{where}: from {module}"
        values = node.get("widgets_values") or []
        assert len(values) == expected_widget_count(info), f"{where}: widgets_values {values}"
        specs = dict(widget_inputs(info))
        for name, value in widget_values_by_name(node, info).items():
            check_widget_value(where, name, specs[name], value)
    all_inputs = {t: dict(input_specs(info)) for t, info in object_info.items()}
    for link_id, src, src_slot, dst, _, kind in wf["links"]:
        source, target = nodes[src], nodes[dst]
        assert object_info[source["type"]]["output"][src_slot] == kind, (path.name, link_id)
        name = next(e["name"] for e in target["inputs"] if e.get("link") == link_id)
        spec = all_inputs[target["type"]][name]
        assert spec_type(spec) in (kind, "*"), f"{path.name} link {link_id}: {kind} into {target['type']}.{name}"


def test_examples_are_offered_as_templates(server: Server) -> None:
    """ComfyUI 0.17 serves a pack's workflows/ folder in the template browser (app/custom_node_manager.py)."""
    assert sorted(server.get("/workflow_templates")["ComfyUI-EPD"]) == sorted(p.stem for p in EXAMPLES)


def test_converter_matches_the_frontend(object_info: dict[str, Any]) -> None:
    """epd_toy_cpu.api.json is what app.graphToPrompt() (frontend 1.41.21) made of epd_toy_cpu.json."""
    frontend = json.loads(TOY.with_suffix(".api.json").read_text(encoding="utf-8"))
    ours = to_api_prompt(json.loads(TOY.read_text(encoding="utf-8")), object_info)
    assert ours == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in frontend.items()}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_prompt_fails_only_for_missing_files(path: Path, server: Server, object_info: dict[str, Any]) -> None:
    """The server's own validation of the converted prompt finds nothing but absent model/table/.pkl files."""
    prompt = to_api_prompt(json.loads(path.read_text(encoding="utf-8")), object_info)
    status, data = server.queue(prompt)
    if status == 200:  # nothing to check against a folder (EPD Import Upstream Table): it runs and fails there
        result = server.wait(data["prompt_id"])
        assert result["status"]["status_str"] == "error"
        assert "EPD Import Upstream Table: upstream EPD pickle not found" in json.dumps(result["status"]), result[
            "status"
        ]
        return
    assert status == 400 and data["error"]["type"] == "prompt_outputs_failed_validation", data
    for node_id, err in data["node_errors"].items():
        for problem in err["errors"]:
            missing_file = problem["type"] == "value_not_in_list" and MODEL_FILE.search(
                problem["details"].split("'")[1]
            )
            missing_table = problem["type"] == "custom_validation_failed" and "no table" in problem["details"]
            assert missing_file or missing_table, (path.name, node_id, problem)


def test_toy_workflow_runs_on_cpu(server: Server, object_info: dict[str, Any]) -> None:
    pytest.importorskip("sklearn", reason="the toy model fits a mixture to sklearn's digits")
    from safetensors.torch import load_file

    workflow = json.loads(TOY.read_text(encoding="utf-8"))
    result = server.run(to_api_prompt(workflow, object_info))
    assert result["status"]["status_str"] == "success", json.dumps(result["status"])[-3000:]
    types = {str(n["id"]): n["type"] for n in workflow["nodes"]}
    by_type = {types[k]: v for k, v in result["outputs"].items()}
    shown = json.loads(by_type["EPD_Table"]["text"][0])  # the table the EPD Table node passed through
    assert (shown["num_steps"], shown["num_points"], shown["metadata"]["provenance"]) == (6, 2, "default")
    saved = by_type["SaveLatent"]["latents"][0]
    path = server.base / "output" / saved["subfolder"] / saved["filename"]
    latent = load_file(str(path))["latent_tensor"]
    assert tuple(latent.shape) == (2, 4, 4, 4) and bool(latent.isfinite().all())
    assert float(latent.abs().max()) < 2.0  # digits scaled to [-1, 1], not the sigma-80 noise it started from


def test_a_workflow_saved_with_the_old_plugin_checkbox_still_runs(server: Server, object_info: dict[str, Any]) -> None:
    """plugin was a checkbox before it became auto/on/off: true/false must pass validation and mean on/off."""
    pytest.importorskip("sklearn", reason="the toy model fits a mixture to sklearn's digits")
    from safetensors.torch import load_file

    workflow = json.loads(TOY.read_text(encoding="utf-8"))
    sampler = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "EPD_Sampler")
    save = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "SaveLatent")
    latents = {}
    for value in (False, "off"):
        prompt = to_api_prompt(workflow, object_info)
        prompt[sampler]["inputs"]["plugin"] = value
        result = server.run(prompt)
        assert result["status"]["status_str"] == "success", json.dumps(result["status"])[-3000:]
        saved = result["outputs"][save]["latents"][0]
        latents[value] = load_file(str(server.base / "output" / saved["subfolder"] / saved["filename"]))[
            "latent_tensor"
        ]
    assert torch.equal(latents[False], latents["off"])
