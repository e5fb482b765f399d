"""EPD RL Tune through ComfyUI's real CFGGuider, a real (tiny, random) TAESD VAE and the exact toy MODEL (issue 4)."""

from __future__ import annotations

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfy.model_management
import torch
from comfyui_epd.epd_core.digits import digits_mixture
from comfyui_epd.epd_core.grids import epd_sigmas
from comfyui_epd.epd_core.rl import load_policy
from comfyui_epd.epd_core.tables import default_table
from comfyui_epd.nodes.rl_nodes import EPDRLTune, run_rl

toy = pytest.importorskip("testing_nodes.toy_model", reason="testing_nodes needs ComfyUI")


@pytest.fixture(scope="module")
def model():
    return toy.toy_model_patcher(digits_mixture(per_class=2), "edm")


def brightness(images: torch.Tensor, texts) -> torch.Tensor:
    """A weight-free reward for the plumbing: mean brightness, shape [B]."""
    assert images.ndim == 4 and images.shape[-1] == 3 and len(texts) == images.shape[0]
    return images.mean(dim=(1, 2, 3))


def start_table():
    return default_table(epd_sigmas(2, 0.002, 80.0), 2, form="data", afs=True)


def options(**changes):
    opts = dict(prompt_texts="", cfg=2.0, width=32, height=32, form="auto", iterations=3, prompts_per_step=2,
                group_size=2, concentration=20.0, lr=3e-3, kl_coef=0.01, clip_range=0.2, learn_scales=False,
                grouping="prompt", eval_every=2, eval_per_prompt=1, seed=0, policy_file="", resume=False)  # fmt: skip
    opts.update(changes)
    return opts


def conds():
    return [toy.class_conditioning(c) for c in (1, 7)], [toy.empty_conditioning()]


def test_rl_node_runs_rollouts_through_guider_and_vae(model, vae, tmp_path, monkeypatch):
    positive, negative = conds()
    seen = []

    def reward(images, texts):
        seen.append((tuple(images.shape), list(texts)))
        return brightness(images, texts)

    opts = options(prompt_texts="one\nseven", policy_file="run1")
    table, rewards, preview = run_rl(model, vae, positive, negative, reward, start_table(), opts, None)
    assert len(rewards) == 3 and all(torch.isfinite(torch.tensor(rewards)))
    assert seen[1] == ((4, 32, 32, 3), ["one", "seven", "one", "seven"])  # image i shows prompt i % P
    assert preview.shape == (2, 32, 32, 3) and table.metadata["provenance"] == "rl"
    assert not table.r_logits.requires_grad
    policy, done = load_policy(tmp_path / "epd_rl" / "run1.safetensors")
    assert done == 3 and policy.table.num_steps == 2


def test_resume_continues_from_the_saved_policy(model, vae, tmp_path, monkeypatch):
    positive, negative = conds()
    opts = options(policy_file="p", iterations=2)
    run_rl(model, vae, positive, negative, brightness, start_table(), opts, None)
    run_rl(
        model,
        vae,
        positive,
        negative,
        brightness,
        start_table(),
        options(policy_file="p", iterations=2, resume=True),
        None,
    )
    _, done = load_policy(tmp_path / "epd_rl" / "p.safetensors")
    assert done == 4


def test_node_execute_returns_table_rewards_and_preview(model, vae):
    positive, negative = conds()
    lists = {k: [v] for k, v in options(iterations=2).items()}
    with torch.inference_mode():  # as ComfyUI's prompt worker runs every node
        out = EPDRLTune.execute([model], [vae], positive, negative, reward=[brightness], table=[start_table()], **lists)
    table, reward_map, images = out.result
    assert table.num_steps == 2 and len(reward_map["loss"]) == 2 and images.shape[-1] == 3


def test_cancel_saves_the_best_mean_table_then_stops_the_prompt(model, vae, models_dir, monkeypatch):
    from comfyui_epd.epd_core.table_io import load_table
    from comfyui_epd.nodes.comfy import training

    update = training.Reporter.update

    def cancel_after_three(self, step, preview=None, **values):
        update(self, step, preview, **values)
        if step == 3:
            comfy.model_management.interrupt_current_processing(True)  # Cancel pressed

    monkeypatch.setattr(training.Reporter, "update", cancel_after_three)
    positive, negative = conds()
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run_rl(model, vae, positive, negative, brightness, start_table(), options(iterations=50), None)
    assert not comfy.model_management.processing_interrupted()
    (path,) = (models_dir / "epd" / "autosave").glob("epd_rl_tune_*.safetensors")
    table = load_table(path)
    assert table.metadata["cancelled"] is True and table.metadata["rl_iterations_run"] == 3
    assert table.metadata["provenance"] == "rl"


def test_bad_inputs_get_clear_errors(model, vae):
    positive, negative = conds()
    with pytest.raises(ValueError, match="prompt text lines"):
        run_rl(model, vae, positive, negative, brightness, start_table(), options(prompt_texts="only one"), None)
    with pytest.raises(ValueError, match="plain file name"):
        run_rl(model, vae, positive, negative, brightness, start_table(), options(policy_file="../x"), None)
    with pytest.raises(ValueError, match="group_size"):
        run_rl(model, vae, positive, negative, brightness, start_table(), options(group_size=1), None)


def test_policy_file_names_are_checked_before_training_and_never_overwritten(model, vae, models_dir):
    positive, negative = conds()
    run = lambda **changes: run_rl(model, vae, positive, negative, brightness, start_table(), options(**changes), None)  # noqa: E731
    for bad in ("x" * 240, "grün", "a/b"):  # too long once the temp suffix is added; not ASCII; a folder
        with pytest.raises(ValueError, match=r"EPD RL Tune: policy_file .* is not a plain file name"):
            run(policy_file=bad)
    assert not (models_dir / "epd" / "autosave").exists(), "refused before anything ran or was saved"
    unrelated = models_dir / "epd_rl" / "mine.safetensors"
    unrelated.parent.mkdir(parents=True)
    unrelated.write_bytes(b"not a policy")
    with pytest.raises(ValueError, match=r"'mine\.safetensors' already exists in models/epd_rl; turn on resume"):
        run(policy_file="mine", iterations=1)
    assert unrelated.read_bytes() == b"not a policy"
    run(policy_file="mine", iterations=1, overwrite_policy=True)
    assert load_policy(unrelated)[1] == 1
