"""The training nodes run as queued prompts on a real ComfyUI server.

What the adapter tests cannot show: EPD Distill and EPD RL Tune work through ComfyUI's own
executor (prompts under torch.inference_mode, is_input_list inputs, caching, progress), fed
by real links from core nodes. The server gets testing_nodes (an exact toy MODEL and class
CONDITIONING) and a random-weight tiny TAESD in models/vae of its --base-directory, which
core VAELoader loads; tables and policies land in that base's models folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from comfy_server import Server, request, running_server

ROOT = Path(__file__).resolve().parents[2]
VAE_FILE = "taesd_tiny.safetensors"
CFG = 2.0


def write_tiny_taesd(path: Path) -> None:
    """A random-weight TAESD state dict that ComfyUI's VAE detection takes for a TAESD (cf. tests/adapter)."""
    import comfy.taesd.taesd
    from safetensors.torch import save_file

    torch.manual_seed(0)
    taesd = comfy.taesd.taesd.TAESD(latent_channels=4)  # ComfyUI's no-init ops: fill the weights ourselves
    state = {
        k: (torch.randn_like(v) * 0.05 if v.ndim > 1 else torch.zeros_like(v)) for k, v in taesd.state_dict().items()
    }
    state["vae_scale"] = torch.tensor(1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


@pytest.fixture(scope="module")
def server(comfyui: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pytest.importorskip("sklearn", reason="the toy model fits a mixture to sklearn's digits")
    base = tmp_path_factory.mktemp("comfy_training")
    write_tiny_taesd(base / "models" / "vae" / VAE_FILE)
    packs = {"ComfyUI-EPD": ROOT, "epd_testing_nodes": ROOT / "testing_nodes"}
    with running_server(comfyui, base, packs, "/object_info/EPDTest_ToyModel", {}) as srv:
        yield srv


def toy_nodes() -> dict[str, Any]:
    """Nodes 1-3: the exact toy MODEL (EDM), class-3 positive, unconditional negative."""
    return {
        "1": {"class_type": "EPDTest_ToyModel", "inputs": {"kind": "edm"}},
        "2": {"class_type": "EPDTest_ClassConditioning", "inputs": {"label": 3}},
        "3": {"class_type": "EPDTest_ClassConditioning", "inputs": {"label": -1}},
    }


def save_node(source: str, name: str) -> dict[str, Any]:
    return {"class_type": "EPD_SaveTable", "inputs": {"table": [source, 0], "name": name, "overwrite": True}}


def distill_prompt(name: str, learn_sigmas: bool) -> dict[str, Any]:
    """Toy model -> EPD Distill (3 steps, K = 2, 2 iterations at 32x32) -> EPD Save Table."""
    inputs = {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": CFG, "width": 32, "height": 32,
        "batch": 2, "steps": 3, "num_points": 2, "form": "direction", "schedule": "time_uniform",
        "teacher": "dpm_2", "teacher_substeps": 2, "iterations": 2, "lr": 0.2, "lr_min": 0.01,
        "targets": "global", "bptt": False, "scale_range": 0.05, "learn_sigmas": learn_sigmas, "afs": True,
        "seed": 0, "image_loss_weight": 1.0,
    }  # fmt: skip
    return {**toy_nodes(), "4": {"class_type": "EPD_Distill", "inputs": inputs}, "5": save_node("4", name)}


def rl_prompt(name: str, **changes: Any) -> dict[str, Any]:
    """Toy model + tiny TAESD + contrast reward + default start table -> EPD RL Tune -> save + preview."""
    table = {"sigmas": ["5", 0], "num_points": 2, "kind": "uniform", "form": "data", "afs": True, "tail": "drop"}
    inputs = {
        "model": ["1", 0], "vae": ["6", 0], "positive": ["2", 0], "negative": ["3", 0], "reward": ["7", 0],
        "table": ["4", 0], "prompt_texts": "", "cfg": CFG, "width": 32, "height": 32, "form": "auto",
        "iterations": 2, "prompts_per_step": 1, "group_size": 2, "concentration": 20.0, "lr": 3e-3,
        "kl_coef": 0.01, "clip_range": 0.2, "learn_scales": False, "grouping": "prompt", "eval_every": 1,
        "eval_per_prompt": 1, "seed": 0, "policy_file": "http_policy", "resume": False, **changes,
    }  # fmt: skip
    sigmas = {"model": ["1", 0], "steps": 2, "schedule": "polynomial", "end_at_zero": True}
    return {
        **toy_nodes(),
        "4": {"class_type": "EPD_DefaultTable", "inputs": table},
        "5": {"class_type": "EPD_Sigmas", "inputs": sigmas},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}},
        "7": {"class_type": "EPD_WeightFreeReward", "inputs": {"kind": "contrast"}},
        "8": {"class_type": "EPD_RLTune", "inputs": inputs},
        "9": save_node("8", name),
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["8", 2]}},
    }


def succeeded(result: dict[str, Any]) -> None:
    assert result["status"]["status_str"] == "success", json.dumps(result["status"])[-3000:]


def test_distill_prompt_saves_a_distilled_table(server: Server) -> None:
    from epd_core.table_io import load_table

    plain = server.run(distill_prompt("http_distilled", learn_sigmas=False), timeout=180)
    succeeded(plain)
    assert "http_distilled.safetensors" in plain["outputs"]["5"]["text"][0]
    table = load_table(server.base / "models" / "epd" / "http_distilled.safetensors")
    expected = {"provenance": "distilled", "iterations": 2, "teacher": "dpm_2", "learn_sigmas": False, "guidance": CFG}
    assert {k: table.metadata.get(k) for k in expected} == expected, table.metadata
    assert (table.num_steps, table.num_points, table.afs) == (3, 2, True)

    learned = server.run(distill_prompt("http_learned_sigmas", learn_sigmas=True), timeout=180)
    succeeded(learned)
    moved = load_table(server.base / "models" / "epd" / "http_learned_sigmas.safetensors")
    assert moved.metadata["learn_sigmas"] is True and moved.metadata["iterations"] == 2
    ends = [0, -1]
    assert torch.allclose(moved.sigmas[ends], table.sigmas[ends]), (moved.sigmas, table.sigmas)
    assert not torch.allclose(moved.sigmas[1:-1], table.sigmas[1:-1]), "the interior sigmas were learned"
    assert bool((moved.sigmas[:-1] > moved.sigmas[1:]).all()), moved.sigmas


def test_rl_prompt_saves_a_tuned_table_and_previews(server: Server) -> None:
    from PIL import Image

    from epd_core.table_io import load_table

    result = server.run(rl_prompt("http_rl"), timeout=180)
    succeeded(result)
    table = load_table(server.base / "models" / "epd" / "http_rl.safetensors")
    meta = table.metadata
    assert (meta["provenance"], meta["rl_iterations_run"], meta["guidance"]) == ("rl", 2, CFG)
    assert (meta["rl_concentration"], meta["cancelled"]) == (20.0, False)
    assert (table.num_steps, table.num_points, table.afs) == (2, 2, True)
    assert (server.base / "models" / "epd_rl" / "http_policy.safetensors").is_file()
    images = result["outputs"]["10"]["images"]
    assert len(images) == 1 and images[0]["type"] == "temp", images
    shown = server.base / "temp" / images[0]["subfolder"] / images[0]["filename"]
    with Image.open(shown) as image:
        assert image.size == (32, 32)


def test_rl_rejects_a_bad_policy_file_with_the_node_name(server: Server) -> None:
    result = server.run(rl_prompt("never_saved", policy_file="../escape"), timeout=180)
    assert result["status"]["status_str"] == "error"
    errors = [body for kind, body in result["status"]["messages"] if kind == "execution_error"]
    assert len(errors) == 1 and errors[0]["node_type"] == "EPD_RLTune", result["status"]
    assert errors[0]["exception_message"].startswith("EPD RL Tune: policy_file '../escape'"), errors[0]
    assert not (server.base / "models" / "epd" / "never_saved.safetensors").exists()


# --- Cancel at random moments: the best table is on disk every time ------------------------------

TRIALS = 10


def autosaved_tables(server: Server) -> set[Path]:
    return set((server.base / "models" / "epd" / "autosave").glob("*.safetensors"))


def interrupt_at_random(server: Server, prompt: dict[str, Any], rng: Any, latest: float) -> tuple[dict, Path]:
    """Queue ``prompt``, wait until its training node has started (its first autosave appears),
    POST /interrupt after a random delay in [0, latest] s; returns (history entry, autosave path)."""
    import time

    before = autosaved_tables(server)
    status, data = server.queue(prompt)
    assert status == 200, data
    deadline = time.monotonic() + 120
    while not (new := autosaved_tables(server) - before):
        assert time.monotonic() < deadline, server.log.read_text()[-3000:]
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, latest))
    assert request(server.url + "/interrupt", {"prompt_id": data["prompt_id"]})[0] == 200
    (path,) = new
    return server.wait(data["prompt_id"], timeout=120), path


def check_kept(result: dict[str, Any], path: Path, iterations_key: str) -> tuple[bool, int]:
    """An interrupted prompt left a valid table marked cancelled; a finished one, its final table."""
    from epd_core.table_io import load_table

    table = load_table(path)  # loads and validates: never a torn or missing file
    interrupted = any(kind == "execution_interrupted" for kind, _ in result["status"]["messages"])
    assert interrupted or result["status"]["status_str"] == "success", json.dumps(result["status"])[-2000:]
    assert table.metadata["cancelled"] is interrupted, table.metadata
    return interrupted, int(table.metadata[iterations_key])


def test_distill_cancelled_at_random_moments_keeps_its_best_table(server: Server) -> None:
    import random

    rng, outcomes = random.Random(12), []
    for trial in range(TRIALS):
        prompt = distill_prompt(f"never_{trial}", learn_sigmas=False)
        prompt["4"]["inputs"].update(iterations=400, seed=trial, vae=["6", 0])  # the VAE's comfy ops check too
        prompt["6"] = {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}}
        result, path = interrupt_at_random(server, prompt, rng, latest=4.0)
        outcomes.append(check_kept(result, path, "iterations"))
    assert sum(interrupted for interrupted, _ in outcomes) == TRIALS, outcomes
    assert len({iterations for _, iterations in outcomes}) > 3, f"the moments were not spread: {outcomes}"


def test_rl_cancelled_at_random_moments_keeps_its_best_table(server: Server) -> None:
    import random

    rng, outcomes = random.Random(21), []
    for trial in range(TRIALS):
        prompt = rl_prompt(f"never_rl_{trial}", iterations=400, seed=trial, policy_file="")
        result, path = interrupt_at_random(server, prompt, rng, latest=4.0)
        outcomes.append(check_kept(result, path, "rl_iterations_run"))
    assert sum(interrupted for interrupted, _ in outcomes) == TRIALS, outcomes
    assert len({iterations for _, iterations in outcomes}) > 3, f"the moments were not spread: {outcomes}"
