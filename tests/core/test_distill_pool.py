"""The teacher pool (epd_core/distill/pool.py): the teacher runs once per pooled batch, float64."""

from __future__ import annotations

import pytest
import torch

from epd_core.distill import DistillConfig, distill, loop, pool
from epd_core.distill.pool import make_pool, pool_order
from epd_core.mixture import two_blobs
from epd_core.schedules import get_sigmas_polynomial
from epd_core.solver import StepConfig
from epd_core.tables import default_table

SIGMA_MAX = 20.0
MIX = two_blobs()
STEP = StepConfig(form="direction")


def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return MIX.denoise(x, sigma)


def noise_fn(batch: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(batch, 4, generator=gen, dtype=torch.float64) * SIGMA_MAX


def start_table():
    grid = torch.cat([get_sigmas_polynomial(3, 0.05, SIGMA_MAX)[:-1], torch.zeros(1, dtype=torch.float64)])
    return default_table(grid, 2, form="direction").replace(scale_dir=0.05, scale_time=0.05)


def counting(monkeypatch, module) -> list[int]:
    """Record the batch size of every teacher_trajectory call made from ``module``."""
    calls, original = [], module.teacher_trajectory

    def counted(model, x, *args, **kwargs):
        calls.append(x.shape[0])
        return original(model, x, *args, **kwargs)

    monkeypatch.setattr(module, "teacher_trajectory", counted)
    return calls


def test_pool_order_visits_every_batch_once_per_epoch() -> None:
    order = pool_order(4, torch.Generator().manual_seed(0))
    epochs = [[next(order) for _ in range(4)] for _ in range(3)]
    assert all(sorted(epoch) == [0, 1, 2, 3] for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1  # a fresh order each epoch


@pytest.mark.parametrize("targets,bptt", [("final", True), ("global", False)])
def test_a_pool_runs_the_teacher_once_per_batch_and_still_learns(monkeypatch, targets: str, bptt: bool) -> None:
    in_loop, in_pool = counting(monkeypatch, loop), counting(monkeypatch, pool)
    config = DistillConfig(iterations=24, batch=8, teacher="dpm_2", inserted=7, eval_every=4, targets=targets,
                           bptt=bptt, pool_batches=3, val_batch=16)  # fmt: skip
    stats = list(distill(model, start_table(), noise_fn, config, step_config=STEP))
    assert in_loop == [16, 8, 8, 8]  # the validation batch, then 3 teacher runs in 24 iterations
    assert in_pool == []  # the pool fills as the first epoch runs (progress and cancel work from the start)
    assert stats[-1].best_val_error < 0.8 * stats[0].best_val_error


def test_a_given_pool_is_reused_and_its_features_computed_once(monkeypatch) -> None:
    table = start_table()
    shared = make_pool(model, noise_fn, 2, 8, table.sigmas, torch.Generator().manual_seed(5),
                       teacher="dpm_2", inserted=7)  # fmt: skip
    finals = [batch[-1] for batch in shared.targets]
    seen = []

    def feature(x: torch.Tensor) -> torch.Tensor:
        seen.extend(k for k, final in enumerate(finals) if x is final)
        return 10 * x[:, :1]

    in_pool = counting(monkeypatch, pool)
    config = DistillConfig(iterations=8, batch=8, teacher="dpm_2", inserted=7, eval_every=4, targets="final",
                           learn_sigmas=True, feature_weight=1.0, val_batch=16)  # fmt: skip
    stats = list(distill(model, table, noise_fn, config, step_config=STEP, feature_fn=feature, pool=shared))
    assert in_pool == []  # the given pool's teacher states are used as they are
    assert sorted(seen) == [0, 1]  # 4 epochs, but each pooled batch's features once
    assert stats[-1].best_val_error < stats[0].best_val_error


def test_pool_settings_that_cannot_work_are_refused_before_compute(monkeypatch) -> None:
    table = start_table()
    base = DistillConfig(iterations=2, batch=8, teacher="dpm_2", inserted=7, pool_batches=2)
    in_pool = counting(monkeypatch, pool)
    bad = {
        "cannot serve targets='local'": base._replace(targets="local"),
        "learn_sigmas needs targets='final'": base._replace(learn_sigmas=True),
        "pool_batches must be >= 0": base._replace(pool_batches=-1),
    }
    for message, config in bad.items():
        with pytest.raises(ValueError, match=message):
            next(distill(model, table, noise_fn, config, step_config=STEP))
    shared = make_pool(model, noise_fn, 1, 4, table.sigmas, torch.Generator(), teacher="heun", inserted=3)
    with pytest.raises(ValueError, match=r"batches of 4.*asks for 8.*made by heun with M=3.*final states only"):
        next(distill(model, table, noise_fn, base._replace(pool_batches=0), step_config=STEP, pool=shared))
    assert in_pool == [4]  # only the pool made above ran a teacher
