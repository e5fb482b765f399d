"""EPD Distill through ComfyUI's real CFGGuider on the exact toy MODEL (issue 3)."""

from __future__ import annotations

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfy.model_management
import torch
from comfyui_epd.epd_core.digits import digits_mixture
from comfyui_epd.nodes.comfy import training
from comfyui_epd.nodes.distill_nodes import EPDDistill, run_distill

toy = pytest.importorskip("testing_nodes.toy_model", reason="testing_nodes needs ComfyUI")


@pytest.fixture(scope="module")
def model():
    return toy.toy_model_patcher(digits_mixture(), "edm")


def options(**changes):
    opts = dict(cfg=3.0, width=32, height=32, batch=4, steps=2, num_points=2, form="direction", schedule="time_uniform",
                teacher="dpm_2", teacher_substeps=3, iterations=6, lr=0.2, lr_min=0.01, targets="global", bptt=False,
                scale_range=0.05, afs=True, seed=0, table=None)  # fmt: skip
    opts.update(changes)
    return opts


def test_distill_node_runs_through_cfg_guider(model):
    positive = [toy.class_conditioning(c) for c in (1, 7)]
    table, losses = run_distill(model, positive, [toy.empty_conditioning()], options(iterations=4), None)
    assert table.num_steps == 2 and table.metadata["provenance"] == "distilled" and table.metadata["guidance"] == 3.0
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert not table.r_logits.requires_grad
    assert not comfy.model_management.in_training, "in_training is reset after the loop"


def test_node_execute_returns_table_and_loss_map(model):
    lists = {k: [v] for k, v in options(iterations=2).items()}
    out = EPDDistill.execute([model], [toy.class_conditioning(3)], [toy.empty_conditioning()], **lists)
    table, loss_map = out.result
    assert table.num_points == 2 and len(loss_map["loss"]) == 2


def autosaved(models_dir):
    """The tables EPD Distill / EPD RL Tune kept in models/epd/autosave."""
    from comfyui_epd.epd_core.table_io import load_table

    return [load_table(p) for p in sorted((models_dir / "epd" / "autosave").glob("*.safetensors"))]


def test_cancel_saves_the_best_table_then_stops_the_prompt(model, models_dir, monkeypatch):
    seen = []
    update = training.Reporter.update

    def cancel_after_two(self, step, preview=None, **values):
        seen.append(values["val"])
        update(self, step, preview, **values)
        if step == 2:
            comfy.model_management.interrupt_current_processing(True)  # Cancel pressed

    monkeypatch.setattr(training.Reporter, "update", cancel_after_two)
    pos, neg = [toy.class_conditioning(2)], [toy.empty_conditioning()]
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run_distill(model, pos, neg, options(iterations=50), None)
    assert not comfy.model_management.processing_interrupted(), "ComfyUI's flag is consumed, as its samplers do"
    (table,) = autosaved(models_dir)
    assert table.metadata["cancelled"] is True and table.metadata["iterations"] == 2
    assert table.metadata["provenance"] == "distilled" and len(seen) == 2


def test_an_interrupt_from_inside_a_model_call_keeps_the_best_table(models_dir, monkeypatch):
    # comfy ops raise InterruptProcessingException inside every forward of a real UNet or VAE.
    model = toy.toy_model_patcher(digits_mixture(), "edm")
    net, reported = model.model.diffusion_model, []
    forward, update = net.forward, training.Reporter.update

    def interrupted_forward(*args, **kwargs):
        if len(reported) == 3:  # the first model call after iteration 3
            raise comfy.model_management.InterruptProcessingException()
        return forward(*args, **kwargs)

    def record(self, step, preview=None, **values):
        reported.append(step)
        update(self, step, preview, **values)

    net.forward = interrupted_forward
    monkeypatch.setattr(training.Reporter, "update", record)
    pos, neg = [toy.class_conditioning(2)], [toy.empty_conditioning()]
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run_distill(model, pos, neg, options(iterations=50), None)
    (table,) = autosaved(models_dir)
    assert table.metadata["cancelled"] is True and table.metadata["iterations"] == 3
    assert table.metadata["provenance"] == "distilled"


def test_a_finished_run_leaves_its_best_table_in_autosave(model, models_dir):
    pos, neg = [toy.class_conditioning(2)], [toy.empty_conditioning()]
    table, losses = run_distill(model, pos, neg, options(iterations=3), "7")
    (kept,) = autosaved(models_dir)
    assert kept.metadata["cancelled"] is False and kept.metadata["iterations"] == 3 == len(losses)
    torch.testing.assert_close(kept.r_logits, table.r_logits)
    assert table.metadata["autosave"].endswith("_node7.safetensors")


def test_distill_works_on_a_model_built_under_inference_mode():
    # A loader node runs under torch.inference_mode, so the MODEL's weights and buffers are
    # inference tensors; autograd cannot save them unless the bridge swaps them (autograd_safe).
    with torch.inference_mode():
        model = toy.toy_model_patcher(digits_mixture(), "edm")
        pos, neg = [toy.class_conditioning(4)], [toy.empty_conditioning()]
        buffers = list(model.model.diffusion_model.buffers())
        assert buffers and all(b.is_inference() for b in buffers)
        table, losses = run_distill(model, pos, neg, options(iterations=2), None)
    assert len(losses) == 2 and table.num_steps == 2
    assert not any(b.is_inference() for b in model.model.diffusion_model.buffers())


def test_autograd_safe_swaps_inference_tensors_once_and_keeps_values_and_ties():
    with torch.inference_mode():
        net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
        net[1].weight = net[0].weight  # tied
        net.register_buffer("scale", torch.full((3,), 2.0))
        before = [t.clone() for t in (net[0].weight, net[0].bias, net.scale)]
    net[0].weight.requires_grad_(False)
    with training.training_mode():
        assert training.autograd_safe(net) == 4  # weight (tied, once), two biases, one buffer
        assert training.autograd_safe(net) == 0
        x = torch.ones(2, 3, requires_grad=True)
        (net(x) * net.scale).sum().backward()
    assert net[1].weight is net[0].weight and not net[0].weight.requires_grad and net[0].bias.requires_grad
    for old, new in zip(before, (net[0].weight, net[0].bias, net.scale)):
        assert torch.equal(old, new) and not new.is_inference()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"outside torch\.inference_mode"):
        training.autograd_safe(net)


def test_mismatched_prompt_lists_are_a_clear_error(model):
    pos = [toy.class_conditioning(c) for c in (1, 2, 3)]
    neg = [toy.empty_conditioning(), toy.empty_conditioning()]
    with pytest.raises(ValueError, match="EPD Distill: got 3 positive and 2 negative prompts"):
        run_distill(model, pos, neg, options(), None)


def test_stack_conditioning_needs_equal_token_lengths():
    a = [[torch.zeros(1, 77, 8), {}]]
    b = [[torch.zeros(1, 154, 8), {}]]
    with pytest.raises(ValueError, match="different token lengths"):
        training.stack_conditioning([a, b], "EPD Distill")
    stacked = training.stack_conditioning([a, a], "EPD Distill")
    assert stacked[0][0].shape == (2, 77, 8)


def test_distill_works_on_conds_and_a_table_made_under_inference_mode(model):
    # ComfyUI runs every node under torch.inference_mode: the start table and the conds are
    # inference tensors, which autograd cannot save unless the bridge copies them.
    with torch.inference_mode():
        pos, neg = [toy.class_conditioning(4)], [toy.empty_conditioning()]
        table, losses = run_distill(model, pos, neg, options(iterations=2, scale_range=0.0), None)
    assert len(losses) == 2 and table.num_steps == 2


def test_learned_sigmas_reach_the_table_and_epd_sigmas(model):
    from comfyui_epd.nodes.comfy import sampling

    pos, neg = [toy.class_conditioning(c) for c in (1, 7)], [toy.empty_conditioning()]
    fixed, _ = run_distill(model, pos, neg, options(iterations=4, steps=3), None)
    learned, _ = run_distill(model, pos, neg, options(iterations=4, steps=3, learn_sigmas=True), None)
    assert learned.metadata["learn_sigmas"] is True and fixed.metadata["learn_sigmas"] is False
    assert learned.sigmas[0] == fixed.sigmas[0] and learned.sigmas[-1] == fixed.sigmas[-1] == 0.0
    assert not torch.allclose(learned.sigmas, fixed.sigmas, rtol=1e-4), "the interior sigmas moved"
    # EPD Sigmas fed the table hands the sampler the learned grid.
    grid = sampling.table_sigmas(model, learned, "EPD Sigmas")
    torch.testing.assert_close(grid.double().cpu(), learned.sigmas, rtol=1e-6, atol=1e-7)


def test_decoded_image_loss_backpropagates_through_the_vae_into_the_table(model, vae):
    pos, neg = [toy.class_conditioning(c) for c in (1, 7)], [toy.empty_conditioning()]
    latent_only, base = run_distill(model, pos, neg, options(iterations=3, targets="final"), None)
    table, losses = run_distill(model, pos, neg, options(iterations=3, targets="final", vae=vae), None)
    assert table.metadata["image_loss_weight"] == 1.0 and latent_only.metadata["image_loss_weight"] == 0.0
    assert losses[0] > base[0], "the decoded-image term adds to the same first batch's latent loss"
    assert not torch.equal(table.r_logits, latent_only.r_logits), "the image term changes the gradient"
    weights = list(vae.first_stage_model.parameters())
    assert all(p.grad is None for p in weights), "the VAE is never trained"
    assert any(p.requires_grad for p in weights), "its requires_grad flags are restored"


def test_a_teacher_pool_runs_the_teacher_once_per_pooled_batch(model, monkeypatch, caplog):
    from comfyui_epd.epd_core.distill import loop

    teacher_runs, original = [], loop.teacher_trajectory
    monkeypatch.setattr(loop, "teacher_trajectory", lambda *a, **k: teacher_runs.append(1) or original(*a, **k))
    pos, neg = [toy.class_conditioning(c) for c in (1, 7)], [toy.empty_conditioning()]
    table, losses = run_distill(model, pos, neg, options(iterations=6, targets="final", teacher_pool=2), None)
    assert len(losses) == 6 and len(teacher_runs) == 1 + 2  # the validation batch, then 2 pooled batches
    assert table.metadata["teacher_pool"] == 2
    # The pool is on by default; targets it cannot serve run on fresh noise instead, and say so.
    for targets, learn_sigmas in (("local", False), ("global", True)):
        teacher_runs.clear()
        opts = options(iterations=2, targets=targets, learn_sigmas=learn_sigmas, teacher_pool=2)
        with caplog.at_level("WARNING"):
            table, _ = run_distill(model, pos, neg, opts, None)
        assert table.metadata["teacher_pool"] == 0 and "teacher_pool 2 not used" in caplog.text
        assert len(teacher_runs) == 1 + (2 if targets == "global" else 0)  # validation, then fresh batches


def test_mmd_loss_runs_and_learns_a_different_table_than_l2_from_the_same_seed(model):
    pos, neg = [toy.class_conditioning(c) for c in (1, 7)], [toy.empty_conditioning()]
    l2, l2_losses = run_distill(model, pos, neg, options(iterations=4), None)
    same, _ = run_distill(model, pos, neg, options(iterations=4, loss="l2"), None)
    mmd, mmd_losses = run_distill(model, pos, neg, options(iterations=4, loss="mmd"), None)
    assert l2.metadata["loss"] == "l2" and mmd.metadata["loss"] == "mmd"
    torch.testing.assert_close(same.r_logits, l2.r_logits, rtol=0, atol=0)  # no loss input = l2, bit for bit
    assert len(mmd_losses) == 4 and all(torch.isfinite(torch.tensor(mmd_losses)))
    assert mmd_losses[0] != l2_losses[0], "the same first batch scores differently under patch MMD"
    assert not torch.equal(mmd.r_logits, l2.r_logits), "the MMD gradient moves the table elsewhere"


def test_an_unknown_loss_is_a_clear_node_error(model):
    lists = {k: [v] for k, v in options(iterations=2, loss="huber").items()}
    with pytest.raises(ValueError, match=r"EPD Distill: .*loss='huber' is not one of \('l2', 'mmd'\)"):
        EPDDistill.execute([model], [toy.class_conditioning(3)], [toy.empty_conditioning()], **lists)


def test_save_memory_recomputes_the_model_calls_and_learns_the_same_table(model, monkeypatch):
    net = model.model.diffusion_model
    calls, forward = [], net.forward
    monkeypatch.setattr(net, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    pos, neg = [toy.class_conditioning(c) for c in (1, 7)], [toy.empty_conditioning()]
    plain, plain_losses = run_distill(model, pos, neg, options(iterations=3, targets="final"), None)
    plain_calls = len(calls)
    saved, saved_losses = run_distill(model, pos, neg, options(iterations=3, targets="final", save_memory=True), None)
    assert len(calls) - plain_calls > plain_calls, "the backward pass ran the student's model calls again"
    torch.testing.assert_close(torch.tensor(saved_losses), torch.tensor(plain_losses), rtol=1e-6, atol=0)
    torch.testing.assert_close(saved.r_logits, plain.r_logits, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(saved.weight_logits, plain.weight_logits, rtol=1e-5, atol=1e-7)


class TimeOnlyNet(torch.nn.Module):
    """A diffusion_model whose output is its time input (a smooth function of t, as a real UNet's)."""

    dtype = torch.float32

    def forward(self, xc, timesteps, **_):
        return torch.ones_like(xc) * timesteps.reshape(-1, 1, 1, 1) / 1000


def test_on_a_discrete_model_the_time_input_passes_a_gradient_in_training(monkeypatch):
    from comfyui_epd.nodes.comfy.timestep_grad import timestep_gradients

    patcher = toy.toy_model_patcher(digits_mixture(), "eps")  # ModelSamplingDiscrete: rounded timesteps
    base = patcher.model
    monkeypatch.setattr(base, "diffusion_model", TimeOnlyNet())
    x = torch.randn(training.latent_shape(patcher, 1, 32, 32))

    def denoised_and_slope(sigma_value: float) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = torch.tensor([sigma_value], requires_grad=True)
        out = base.apply_model(x, sigma)  # ComfyUI's own _apply_model: calculate_input, timestep, denoised
        (grad,) = torch.autograd.grad(out.sum(), sigma)
        return out.detach(), grad

    plain, plain_grad = denoised_and_slope(2.0)
    with timestep_gradients(base.model_sampling):
        same, grad = denoised_and_slope(2.0)
    assert torch.equal(same, plain), "the forward pass (what the model sees) is unchanged"
    # x0 = x - sigma * eps(t): the time path adds -sigma * eps'(t) * dt/dsigma per element (eps' = 1/1000).
    log_sigmas = base.model_sampling.log_sigmas
    hi = torch.searchsorted(log_sigmas, torch.tensor([2.0]).log())
    extra = -2.0 * (1 / 1000) / (2.0 * (log_sigmas[hi] - log_sigmas[hi - 1])) * x.numel()
    torch.testing.assert_close(grad - plain_grad, extra.reshape(1).float(), rtol=1e-3, atol=0)
