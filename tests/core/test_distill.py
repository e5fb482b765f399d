"""Stage 1 distillation on an exact denoiser (docs/training.md), float64, a few seconds."""

from __future__ import annotations

import pytest
import torch

from epd_core.distill import DistillConfig, distill
from epd_core.distill.loop import check_config
from epd_core.distill.teacher import refine_interval, teacher_trajectory
from epd_core.distill.trainable import TrainableTable, grid_from_logits, grid_logits
from epd_core.mixture import two_blobs
from epd_core.schedules import get_sigmas_polynomial
from epd_core.solver import StepConfig, sample_epd
from epd_core.tables import default_table

SIGMA_MAX = 20.0


MIX = two_blobs()


def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return MIX.denoise(x, sigma)


def noise_fn(batch: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(batch, 4, generator=gen, dtype=torch.float64) * SIGMA_MAX


def grid() -> torch.Tensor:
    return torch.cat([get_sigmas_polynomial(3, 0.05, SIGMA_MAX)[:-1], torch.zeros(1, dtype=torch.float64)])


def final_error(table, seed: int) -> float:
    x = noise_fn(256, torch.Generator().manual_seed(seed))
    ref = teacher_trajectory(model, x, table.sigmas, teacher="dpm_2", inserted=63)[-1]
    out = sample_epd(model, x, table.sigmas, params=table, form="direction")
    return (out - ref).norm(dim=1).mean().item()


def run(config: DistillConfig, start=None):
    start = start or default_table(grid(), 2, form="direction").replace(scale_dir=0.05, scale_time=0.05)
    return start, list(distill(model, start, noise_fn, config, step_config=StepConfig(form="direction")))


def test_refine_interval_nests_and_reaches_zero() -> None:
    fine = refine_interval(8.0, 2.0, 3)
    torch.testing.assert_close(
        fine, torch.tensor([8.0, 8.0 * 0.25**0.25, 8.0 * 0.25**0.5, 8.0 * 0.25**0.75, 2.0], dtype=torch.float64)
    )
    to_zero = refine_interval(1.0, 0.0, 2)
    assert to_zero[-1] == 0 and to_zero[-2] == pytest.approx(1e-3) and len(to_zero) == 5


def test_distillation_lowers_loss_and_error_on_fresh_noise() -> None:
    config = DistillConfig(iterations=40, batch=16, teacher="dpm_2", inserted=15, eval_every=5, seed=0)
    start, stats = run(config)
    assert stats[-1].best_val_error < 0.8 * stats[0].best_val_error
    assert sum(s.loss for s in stats[-5:]) < sum(s.loss for s in stats[:5])
    # Generalises: the table distilled on seed 0's noise also helps on unseen noise.
    assert final_error(stats[-1].best_table, seed=123) < 0.8 * final_error(start, seed=123)


@pytest.mark.parametrize("targets,bptt", [("local", False), ("final", True), ("global", True)])
def test_every_target_variant_improves(targets: str, bptt: bool) -> None:
    config = DistillConfig(
        iterations=15, batch=8, teacher="dpm_2", inserted=7, eval_every=5, targets=targets, bptt=bptt
    )
    _, stats = run(config)
    assert stats[-1].best_val_error < stats[0].best_val_error


def test_deterministic_for_a_fixed_seed() -> None:
    config = DistillConfig(iterations=5, batch=4, teacher="heun", inserted=3, eval_every=5)
    a = run(config)[1][-1].best_table
    b = run(config)[1][-1].best_table
    assert torch.equal(a.r_logits, b.r_logits) and torch.equal(a.weight_logits, b.weight_logits)


def test_stopping_keeps_the_best_table_so_far() -> None:
    calls = iter(range(100))
    config = DistillConfig(iterations=50, batch=4, teacher="heun", inserted=3, eval_every=2)
    start = default_table(grid(), 2, form="direction")
    stats = list(distill(model, start, noise_fn, config, step_config=StepConfig(form="direction"),
                         should_stop=lambda: next(calls) >= 6))  # fmt: skip
    assert len(stats) == 6
    bests = [s.best_val_error for s in stats]
    assert bests == sorted(bests, reverse=True)  # the kept table never gets worse
    assert bests[-1] <= min(s.val_error for s in stats if s.val_error is not None)
    assert not stats[-1].best_table.r_logits.requires_grad


def test_distillation_never_returns_a_table_worse_than_its_start() -> None:
    # A learning rate far too large makes every update worse: the start, scored on the same
    # validation batch before training, must then be what comes back (issue 14, item 4).
    from epd_core.distill.loop import validation_error

    config = DistillConfig(iterations=6, batch=4, teacher="heun", inserted=3, eval_every=1, lr=500.0, lr_min=500.0)
    start, stats = run(config, default_table(grid(), 2, form="direction"))
    x_val = noise_fn(config.val_batch, torch.Generator().manual_seed(config.seed + 1))
    y_val = teacher_trajectory(model, x_val, start.sigmas, teacher="heun", inserted=3)[-1]
    start_error = validation_error(model, start, x_val, y_val, StepConfig(form="direction"), {}, None)
    assert all(s.val_error > start_error for s in stats), "the too-large steps never beat the start"
    assert stats[-1].best_val_error == pytest.approx(start_error, rel=1e-12)
    torch.testing.assert_close(stats[-1].best_table.r_logits, start.r_logits)
    torch.testing.assert_close(stats[-1].best_table.weight_logits, start.weight_logits)


def test_a_feature_loss_is_trained_and_picks_the_best_table() -> None:
    def feature(x: torch.Tensor) -> torch.Tensor:  # a feature the pixel loss underweights
        return 10 * x[:, :1]

    config = DistillConfig(iterations=15, batch=8, teacher="dpm_2", inserted=7, eval_every=5, targets="final",
                           feature_weight=1.0, val_batch=16)  # fmt: skip
    start = default_table(grid(), 2, form="direction").replace(scale_dir=0.05, scale_time=0.05)
    stats = list(distill(model, start, noise_fn, config, step_config=StepConfig(form="direction"), feature_fn=feature))
    # Validation measures the trained objective, final MSE + alpha * feature MSE (here of the start table).
    x_val = noise_fn(16, torch.Generator().manual_seed(config.seed + 1))
    y_val = teacher_trajectory(model, x_val, start.sigmas, teacher="dpm_2", inserted=7)[-1]
    out = sample_epd(model, x_val, start.sigmas, params=start, form="direction", afs=start.afs)
    objective = torch.mean((out - y_val) ** 2) + torch.mean((feature(out) - feature(y_val)) ** 2)
    assert stats[0].best_val_error == pytest.approx(objective.item(), rel=1e-9)
    assert stats[-1].best_val_error < 0.9 * stats[0].best_val_error


def test_backbone_parameters_get_no_gradient() -> None:
    net = torch.nn.Linear(4, 4, dtype=torch.float64)
    net.requires_grad_(False)

    def frozen(x, sigma):
        return MIX.denoise(x, sigma) + 0.0 * net(x)

    config = DistillConfig(iterations=2, batch=4, teacher="heun", inserted=1, eval_every=1)
    list(
        distill(
            frozen,
            default_table(grid(), 2, form="direction"),
            noise_fn,
            config,
            step_config=StepConfig(form="direction"),
        )
    )
    assert net.weight.grad is None


def test_bad_settings_are_reported_together_before_compute() -> None:
    config = DistillConfig(iterations=0, teacher="rk45", targets="sideways", lr=0.1, lr_min=0.5)
    other_grid = get_sigmas_polynomial(6, 0.05, SIGMA_MAX)
    with pytest.raises(
        ValueError, match=r"iterations.*targets='sideways'.*teacher='rk45'.*lr_min.*differs from the requested grid"
    ):
        check_config(config, default_table(grid()), other_grid)


def test_headless_cli_writes_a_loadable_table(tmp_path, capsys, monkeypatch) -> None:
    from epd_core.distill.__main__ import main
    from epd_core.table_io import load_table

    # A user's own denoiser module, named module:attribute on the command line.
    (tmp_path / "my_denoiser.py").write_text(
        "from epd_core.mixture import gaussian\nG = gaussian(0.5, 0.5, 4)\ndef model(x, s):\n    return G.denoise(x, s)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "t.safetensors"
    argv = [str(out), "--model", "my_denoiser:model", "--shape", "4", "--sigma-max", "20", "--steps", "2"]
    assert main([*argv, "--iterations", "3", "--batch", "4", "--teacher-substeps", "3", "--log-every", "1"]) == 0
    table = load_table(out)
    assert table.num_steps == 2 and table.metadata["provenance"] == "distilled"
    assert "iter     3" in capsys.readouterr().out
    assert main([*argv, "--iterations", "3", "--batch", "4", "--pool", "2", "--targets", "final"]) == 0
    assert load_table(out).metadata["teacher_pool"] == 2


# --- learned step sigmas (issue 3: "the step sigmas may be learned with the table") ---


@pytest.mark.parametrize(
    "sigmas",
    [
        torch.tensor([20.0, 4.0, 0.7, 0.0], dtype=torch.float64),  # ends in 0 (EPD's own grids)
        torch.tensor([14.6, 3.0, 0.5, 0.0292], dtype=torch.float64),  # ends at a positive sigma_min
    ],
)
def test_grid_logits_round_trip_and_any_logits_give_a_valid_grid(sigmas: torch.Tensor) -> None:
    torch.testing.assert_close(grid_from_logits(sigmas, grid_logits(sigmas)), sigmas, rtol=1e-12, atol=1e-12)
    for seed in range(5):
        logits = torch.randn(len(sigmas) - 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 4
        out = grid_from_logits(sigmas, logits)
        assert out[0] == sigmas[0] and out[-1] == sigmas[-1]
        assert bool((out[1:] < out[:-1]).all())


def test_the_grid_stays_put_unless_asked() -> None:
    start = default_table(grid(), 2, form="direction")
    assert torch.equal(TrainableTable(start).grid(), start.sigmas)
    assert TrainableTable(start).sigma_logits is None
    learned = TrainableTable(start, learn_sigmas=True)
    assert learned.sigma_logits.requires_grad
    torch.testing.assert_close(learned.export().sigmas, start.sigmas, rtol=1e-12, atol=0.0)


def test_learning_the_grid_moves_it_and_beats_the_fixed_grid() -> None:
    start = default_table(grid(), 2, form="direction").replace(scale_dir=0.05, scale_time=0.05)
    results = {}
    for learn in (False, True):
        config = DistillConfig(iterations=30, batch=16, teacher="dpm_2", inserted=15, targets="final", bptt=True,
                               eval_every=5, learn_sigmas=learn)  # fmt: skip
        stats = list(distill(model, start, noise_fn, config, step_config=StepConfig(form="direction")))
        results[learn] = stats[-1].best_table
    fixed, learned = results[False], results[True]
    assert torch.equal(fixed.sigmas, start.sigmas)
    assert learned.sigmas[0] == start.sigmas[0] and learned.sigmas[-1] == 0.0
    assert not torch.allclose(learned.sigmas, start.sigmas, rtol=1e-3)
    # On noise it never saw, the learned grid beats the fixed one.
    assert final_error(learned, seed=321) < final_error(fixed, seed=321)


def test_learn_sigmas_needs_an_interior_point() -> None:
    one_step = torch.tensor([20.0, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="learn_sigmas needs at least 2 steps"):
        check_config(DistillConfig(learn_sigmas=True), default_table(one_step), one_step)


def saved_bytes(config: DistillConfig, start) -> int:
    """Bytes autograd holds for one iteration's backward (tensors saved outside a recomputed region)."""
    from epd_core.distill.loop import student_losses

    trainable = TrainableTable(start, learn_sigmas=config.learn_sigmas)
    x = noise_fn(config.batch, torch.Generator().manual_seed(0))
    targets = teacher_trajectory(model, x, start.sigmas, teacher="heun", inserted=1)
    held = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        held.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        student_losses(model, x, trainable, targets, config, StepConfig(form="direction"), {})
    return sum(held)


@pytest.mark.parametrize("targets,learn_sigmas", [("global", False), ("final", True)])
def test_recomputing_steps_gives_the_same_table_and_holds_less(targets: str, learn_sigmas: bool) -> None:
    config = DistillConfig(iterations=4, batch=8, teacher="heun", inserted=3, eval_every=1, targets=targets,
                           learn_sigmas=learn_sigmas)  # fmt: skip
    start = default_table(grid(), 2, form="direction").replace(scale_dir=0.05, scale_time=0.05)
    plain = run(config, start)[1]
    recomputed = run(config._replace(checkpoint=True), start)[1]
    for a, b in zip(plain, recomputed):
        assert a.loss == pytest.approx(b.loss, rel=1e-12)
    a, b = plain[-1].best_table, recomputed[-1].best_table
    torch.testing.assert_close(b.r_logits, a.r_logits, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b.weight_logits, a.weight_logits, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b.sigmas, a.sigmas, rtol=1e-10, atol=1e-12)
    assert saved_bytes(config._replace(checkpoint=True), start) < 0.5 * saved_bytes(config, start)
