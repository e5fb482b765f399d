"""Every shipped workflow runs end to end on real-architecture checkpoints in a real server (issue 12).

real_models.py writes random-weight SD1.5, SDXL and SD3 files that ComfyUI's own loaders detect
(CheckpointLoaderSimple, UNETLoader, CLIPLoader type sd3, VAELoader); they are built once
per session and linked into this server's models folders. A workflow whose checkpoint name
says "xl" gets the SDXL checkpoint, every other one the SD1.5 checkpoint. Each workflows/*.json is
converted to an API prompt (ui_prompt.py, widget order from /object_info), its model
names pointed at those files, its sizes shrunk for a 2-core CPU, and queued. It must end
in success with its images and tables on disk; a training workflow's sampling half must
have run on the table it trained. CPU time (psutil, server process user+system) and wall
time are measured per workflow and written to $EPD_E2E_REPORT when that is set.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import real_models
from comfy_server import Server, running_server
from ui_prompt import input_specs, to_api_prompt

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
SIZE = 64  # pixels: an 8x8 latent
PROMPT_TIMEOUT_S = 600.0
MODEL_INPUTS = {  # loader -> (file input, models subfolder)
    "CheckpointLoaderSimple": ("ckpt_name", "checkpoints"),
    "UNETLoader": ("unet_name", "diffusion_models"),
    "CLIPLoader": ("clip_name", "text_encoders"),
    "VAELoader": ("vae_name", "vae"),
}
SHRINK = {
    "EmptyLatentImage": {"width": SIZE, "height": SIZE, "batch_size": 1},
    "EmptySD3LatentImage": {"width": SIZE, "height": SIZE, "batch_size": 1},
    "EPD_Sigmas": {"steps": 3},
    "EPD_ScalewiseSchedule": {"width": SIZE, "height": SIZE},  # the latent's final size: 8 -> scales 4, 5, 6, 8
    "KSampler": {"steps": 3},
    "RepeatLatentBatch": {"amount": 2},  # EPD Fit Start: 2 reference latents, the least it takes
    "EPD_Distill": {"width": SIZE, "height": SIZE, "batch": 1, "steps": 2, "teacher_substeps": 2, "iterations": 2},
    "EPD_RLTune": {
        "width": SIZE,
        "height": SIZE,
        "iterations": 2,
        "group_size": 2,
        "prompts_per_step": 1,
        "eval_every": 1,
        "eval_per_prompt": 1,
    },
}
TRAINERS = {"EPD_Distill", "EPD_RLTune"}


def _upstream_helpers() -> Any:
    """tests/core/test_upstream.py, which writes pickles with the upstream EPD structure."""
    spec = importlib.util.spec_from_file_location("epd_upstream_pickles", ROOT / "tests" / "core" / "test_upstream.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_upstream = _upstream_helpers()
fake_modules = _upstream.fake_modules  # the fixture that makes the upstream globals picklable


@pytest.fixture(scope="session")
def real_model_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, list[str]]]]:
    """The random-weight files, built once per session: (folder, {models subfolder: names})."""
    folder = tmp_path_factory.mktemp("real_models")
    yield folder, real_models.build_all(folder)
    shutil.rmtree(folder)  # about 2.8 GB; pytest would keep the last three sessions' copies


@pytest.fixture(scope="module")
def server(
    comfyui: Path, tmp_path_factory: pytest.TempPathFactory, real_model_files: tuple[Path, dict[str, list[str]]]
) -> Iterator[Server]:
    built, names = real_model_files
    base = tmp_path_factory.mktemp("comfy_real_models")
    real_models.link_models(built, names, base / "models")
    with running_server(comfyui, base, {"ComfyUI-EPD": ROOT}, "/object_info/EPD_Sampler", {}) as srv:
        yield srv


@pytest.fixture(scope="module")
def object_info(server: Server) -> dict[str, Any]:
    return server.get("/object_info")


@pytest.fixture(scope="module")
def server_process(server: Server) -> Any:
    """The psutil.Process of the server (a child of this one, started with its base folder)."""
    psutil = pytest.importorskip("psutil")
    children = psutil.Process().children()
    return next(p for p in children if str(server.base) in " ".join(p.cmdline()))


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Per-workflow measurements; written to $EPD_E2E_REPORT at the end of the module."""
    rows: dict[str, Any] = {}
    yield rows
    path = os.environ.get("EPD_E2E_REPORT")
    if path and rows:
        summary = {"workflows": rows, "cpu_s": sum(r["cpu_s"] for r in rows.values())}
        summary["wall_s"] = sum(r["wall_s"] for r in rows.values())
        Path(path).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


# --- preparing a prompt ----------------------------------------------------------------------


def built_file(names: dict[str, list[str]], folder: str, wanted: str) -> str:
    """The built file a loader gets: the SDXL checkpoint for an SDXL-named one, else the folder's first."""
    if folder == "checkpoints" and "xl" in wanted.lower():
        return real_models.SDXL_CHECKPOINT
    return names[folder][0]


def prepare(prompt: dict[str, Any], object_info: dict[str, Any], names: dict[str, list[str]]) -> None:
    """Point loaders at the built files and shrink sizes, steps and iterations (in place)."""
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in MODEL_INPUTS:
            name, folder = MODEL_INPUTS[kind]
            inputs[name] = built_file(names, folder, inputs[name])
        known = dict(input_specs(object_info[kind]))
        for name, value in SHRINK.get(kind, {}).items():
            assert name in known, f"{kind} has no input {name!r} any more; update SHRINK"
            inputs[name] = value


def write_upstream_pickles(prompt: dict[str, Any], input_dir: Path) -> None:
    """A synthetic upstream predictor .pkl (3 steps, K = 2) for every EPD Import Upstream Table."""
    import torch

    gen = torch.Generator().manual_seed(3)
    params = {k: torch.randn(3, 2, generator=gen) for k in _upstream._PARAMS}
    attrs = {"num_steps": 4, "num_points": 2, "schedule_type": "time_uniform", "schedule_rho": 1.0, "afs": True,
             "scale_dir": 0.05, "scale_time": 0.05, "sampler_stu": "epd", "dataset_name": "ms_coco"}  # fmt: skip
    solvers = sys.modules["solvers"]  # registered by the fake_modules fixture
    loss = {"solver_stu": solvers.epd_sampler, "solver_tea": solvers.heun_sampler, "sigma_min": 0.03,
            "sigma_max": 14.6, "t_steps": torch.tensor([14.6, 3.0, 0.6, 0.03]), "buffer_model": [], "lpips": None}  # fmt: skip
    for node in prompt.values():
        if node["class_type"] == "EPD_ImportUpstreamTable":
            path = input_dir / node["inputs"]["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_upstream._predictor_pickle(params, attrs, loss))


def ancestors(prompt: dict[str, Any], node_id: str) -> set[str]:
    """Ids of every node upstream of ``node_id`` in an API prompt."""
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        for value in prompt[stack.pop()]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and value[0] not in seen:
                seen.add(value[0])
                stack.append(value[0])
    return seen


# --- running and checking ----------------------------------------------------------------------


def run_prompt(server: Server, prompt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Queue and wait; -> (history entry, node_errors of outputs the server left out)."""
    status, data = server.queue(prompt)
    assert status == 200, json.dumps(data)[-3000:]
    result = server.wait(data["prompt_id"], PROMPT_TIMEOUT_S)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"])[-3000:]
    return result, data.get("node_errors") or {}


def assert_only_unsaved_tables(prompt: dict[str, Any], node_errors: dict[str, Any]) -> None:
    """Left out on a first run: EPD Load Table of a table that this same prompt saves."""
    saved = {n["inputs"]["name"] + ".safetensors" for n in prompt.values() if n["class_type"] == "EPD_SaveTable"}
    for node_id, err in node_errors.items():
        node = prompt[node_id]
        assert node["class_type"] == "EPD_LoadTable" and node["inputs"]["table_name"] in saved, (node_id, err)
        assert all("no table" in e["details"] for e in err["errors"]), err


def check_outputs(server: Server, prompt: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """Every image the outputs name is on disk (SaveImage at SIZE px), every saved table loads."""
    from PIL import Image

    from epd_core.table_io import load_table

    files = []
    for node_id, node in prompt.items():
        kind = node["class_type"]
        if kind == "EPD_SaveTable":
            path = server.base / "models" / "epd" / (node["inputs"]["name"] + ".safetensors")
            assert path.is_file(), f"{kind} {node_id}: {path} was not written"
            load_table(path)  # validates shapes, finiteness and the sigma grid
            files.append(str(path.relative_to(server.base)))
        for image in result["outputs"].get(node_id, {}).get("images", []):
            path = server.base / image["type"] / image["subfolder"] / image["filename"]
            assert path.is_file() and path.stat().st_size > 0, (kind, node_id, image)
            if kind == "SaveImage":
                assert Image.open(path).size == (SIZE, SIZE), path
            files.append(str(path.relative_to(server.base)))
        if kind == "SaveImage":
            assert result["outputs"].get(node_id, {}).get("images"), f"SaveImage {node_id} saved nothing"
    return files


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_runs_on_real_architectures(
    path: Path,
    request: pytest.FixtureRequest,
    server: Server,
    object_info: dict[str, Any],
    real_model_files: tuple[Path, dict[str, list[str]]],
    server_process: Any,
    report: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    prompt = to_api_prompt(json.loads(path.read_text(encoding="utf-8")), object_info)
    prepare(prompt, object_info, real_model_files[1])
    if any(n["class_type"] == "EPD_ImportUpstreamTable" for n in prompt.values()):
        request.getfixturevalue("fake_modules")
        write_upstream_pickles(prompt, server.base / "input")

    cpu = server_process.cpu_times()
    start = time.monotonic()
    result, left_out = run_prompt(server, prompt)
    runs = 1
    if left_out:  # a table round trip: the load half validates once the save half has run
        assert_only_unsaved_tables(prompt, left_out)
        result, left_out = run_prompt(server, prompt)
        runs = 2
        assert not left_out, left_out
    wall = time.monotonic() - start
    after = server_process.cpu_times()
    cpu_s = (after.user - cpu.user) + (after.system - cpu.system)

    files = check_outputs(server, prompt, result)
    for node_id, node in prompt.items():
        if node["class_type"] == "SaveImage":
            trainers = {n for n in ancestors(prompt, node_id) if prompt[n]["class_type"] in TRAINERS}
            trained = {n for n in prompt if prompt[n]["class_type"] in TRAINERS}
            assert trainers == trained, f"SaveImage {node_id} does not sample with the trained table"
    report[path.name] = {"cpu_s": round(cpu_s, 2), "wall_s": round(wall, 2), "runs": runs, "files": files}
    line = f"{path.name}: cpu {cpu_s:.1f} s, wall {wall:.1f} s, {runs} run(s), {len(files)} files"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        with capsys.disabled():  # shown even under -q, one line per workflow
            reporter.write_line("\n" + line)


def test_distill_trains_through_unetloader_on_the_sd3_dit(
    server: Server, object_info: dict[str, Any], real_model_files: tuple[Path, dict[str, list[str]]]
) -> None:
    """EPD Distill (learned sigmas) on the SD3 DiT from UNETLoader, then sampling with its table, in one prompt."""
    from epd_core.table_io import load_table

    sd3 = to_api_prompt(json.loads((ROOT / "workflows" / "SD3 text to image.json").read_text("utf-8")), object_info)
    distill = to_api_prompt(
        json.loads((ROOT / "workflows" / "SD1.5 distill a table then sample.json").read_text("utf-8")), object_info
    )
    prepare(sd3, object_info, real_model_files[1])
    prepare(distill, object_info, real_model_files[1])
    of = {node["class_type"]: node_id for node_id, node in sd3.items()}
    guider = sd3[of["CFGGuider"]]["inputs"]
    trainer = next(node for node in distill.values() if node["class_type"] == "EPD_Distill")
    trainer["inputs"].update(model=guider["model"], positive=guider["positive"], negative=guider["negative"],
                             cfg=guider["cfg"], form="data", learn_sigmas=True)  # fmt: skip
    sd3["90"] = trainer
    sd3["91"] = {
        "class_type": "EPD_SaveTable",
        "inputs": {"table": ["90", 0], "name": "sd3_distilled", "overwrite": True},
    }
    sd3[of["EPD_Sigmas"]]["inputs"]["table"] = ["90", 0]
    sd3[of["EPD_Sampler"]]["inputs"]["table"] = ["90", 0]
    result, left_out = run_prompt(server, sd3)
    assert not left_out, left_out
    table = load_table(server.base / "models" / "epd" / "sd3_distilled.safetensors")
    assert (table.metadata["provenance"], table.metadata["kind"], table.metadata["iterations"]) == (
        "distilled",
        "flow",
        2,
    )
    assert float(table.sigmas[0]) <= 1.0 and table.num_steps == 2
    check_outputs(server, sd3, result)


def test_sdxl_checkpoint_is_detected_as_sdxl_eps(real_model_files: tuple[Path, dict[str, list[str]]]) -> None:
    """CheckpointLoaderSimple's own detection on the built file's keys: SDXL, EPS, every text-encoder key used."""
    import torch
    from comfy.model_base import ModelType
    from comfy.model_detection import model_config_from_unet
    from comfy.supported_models import SDXL
    from safetensors import safe_open

    path = real_model_files[0] / "checkpoints" / real_models.SDXL_CHECKPOINT
    with safe_open(str(path), "pt") as f, torch.device("meta"):  # shapes only: no 2 GB read
        sd = {key: torch.empty(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    config = model_config_from_unet(sd, "model.diffusion_model.")
    assert type(config) is SDXL, type(config)  # not a subclass (SSD1B, Segmind Vega, ...)
    assert config.model_type(sd) == ModelType.EPS
    clip = {key: value.shape for key, value in config.process_clip_state_dict(sd).items()}
    wanted = {f"clip_l.transformer.{k}": v for k, v in real_models.clip_shapes().items()}
    wanted |= {f"clip_g.transformer.{k}": v for k, v in real_models.clip_shapes("clip_config_bigg.json").items()}
    # SDXL's CLIP-L gives hidden states only: real checkpoints carry no CLIP-L projection either
    assert set(wanted) - set(clip) == {"clip_l.transformer.text_projection.weight"}
    assert all(wanted[key] == shape for key, shape in clip.items()), "a text-encoder shape differs"


def test_the_sd15_unet_gets_a_time_gradient_while_training(real_model_files: tuple[Path, dict[str, list[str]]]) -> None:
    """On the real SD1.5 UNet from ComfyUI's loader, the straight-through timestep adds the time path's gradient."""
    import comfy.sd
    import torch
    from comfyui_epd.nodes.comfy.timestep_grad import timestep_gradients

    path = real_model_files[0] / "checkpoints" / real_models.SD15_CHECKPOINT
    base = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=False)[0].model
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.zeros(1, 77, 768)

    def output_and_slope() -> tuple[torch.Tensor, torch.Tensor]:
        sigma = torch.tensor([3.0], requires_grad=True)
        out = base.apply_model(x, sigma, c_crossattn=context)
        return out.detach(), torch.autograd.grad(out.square().sum(), sigma)[0]

    plain, plain_slope = output_and_slope()
    with timestep_gradients(base.model_sampling) as applied:
        same, slope = output_and_slope()
    assert applied and torch.equal(same, plain), "the UNet sees the same rounded timestep"
    assert torch.isfinite(slope).all() and not torch.allclose(slope, plain_slope, rtol=1e-3), "time adds a gradient"
