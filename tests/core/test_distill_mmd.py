"""The patch-MMD option of the distillation loss (issue 16 C): a distribution-matching alternative to L2."""

from __future__ import annotations

import pytest
import torch

from epd_core.distill import DistillConfig, distill
from epd_core.distill.losses import state_loss, state_rows
from epd_core.distill.teacher import teacher_trajectory
from epd_core.mixture import two_blobs
from epd_core.mmd import mmd2
from epd_core.schedules import get_sigmas_polynomial
from epd_core.solver import StepConfig, sample_epd
from epd_core.tables import default_table

MIX, SIGMA_MAX = two_blobs(), 20.0


def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return MIX.denoise(x, sigma)


def noise_fn(batch: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(batch, 4, generator=gen, dtype=torch.float64) * SIGMA_MAX


def start():
    sigmas = torch.cat([get_sigmas_polynomial(3, 0.05, SIGMA_MAX)[:-1], torch.zeros(1, dtype=torch.float64)])
    return default_table(sigmas, 2, form="direction").replace(scale_dir=0.05, scale_time=0.05)


def test_l2_stays_the_default_and_mmd_ignores_which_sample_is_which():
    assert DistillConfig().loss == "l2"
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 2, 8, 8, generator=gen, dtype=torch.float64), torch.randn(8, 2, 8, 8, generator=gen)
    y = y.double()
    assert state_loss(x, y) == torch.mean((x - y) ** 2)
    shuffled = y[torch.randperm(8, generator=gen)]
    # pointwise L2 changes when the teacher's samples are shuffled; the patch MMD does not (same patch set)
    assert state_loss(x, shuffled) != state_loss(x, y)
    torch.testing.assert_close(state_loss(x, shuffled, "mmd"), state_loss(x, y, "mmd"), atol=1e-12, rtol=0)
    assert state_rows(x, 4).shape == (8 * 4, 2 * 16) and state_rows(x[:, 0, 0], 4).shape == (8, 8)
    with pytest.raises(ValueError, match=r"loss='l1' is not one of \('l2', 'mmd'\)"):
        state_loss(x, y, "l1")


def test_mmd_distillation_trains_and_is_deterministic():
    config = DistillConfig(iterations=10, batch=32, val_batch=128, teacher="dpm_2", inserted=7, eval_every=5,
                           loss="mmd")  # fmt: skip
    runs = [list(distill(model, start(), noise_fn, config, step_config=StepConfig(form="direction"))) for _ in "ab"]
    first, second = runs
    assert [s.loss for s in first] == [s.loss for s in second]
    assert all(torch.isfinite(torch.tensor(s.loss)) for s in first)
    # the best table's validation MMD never exceeds the start's; on fresh noise the learned table's MMD to
    # the teacher's samples falls well below the start table's (measured 0.178 -> 0.023)
    assert first[-1].best_val_error <= first[0].best_val_error
    x = noise_fn(512, torch.Generator().manual_seed(9))
    ref = teacher_trajectory(model, x, start().sigmas, teacher="dpm_2", inserted=31)[-1]
    before = float(mmd2(sample_epd(model, x, start().sigmas, params=start(), form="direction"), ref))
    after = float(mmd2(sample_epd(model, x, start().sigmas, params=first[-1].best_table, form="direction"), ref))
    assert after < 0.5 * before, (before, after)


def test_a_bad_loss_is_reported_before_compute():
    with pytest.raises(ValueError, match=r"loss='huber' is not one of \('l2', 'mmd'\)"):
        next(distill(model, start(), noise_fn, DistillConfig(loss="huber")))
    with pytest.raises(ValueError, match=r"mmd_patch must be >= 1 latent pixel, got 0"):
        next(distill(model, start(), noise_fn, DistillConfig(loss="mmd", mmd_patch=0)))
