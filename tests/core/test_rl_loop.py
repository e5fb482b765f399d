"""The RDPO loop on an exact denoiser with a known reward (docs/training.md), float64, a few seconds."""

from __future__ import annotations

import pytest
import torch

from epd_core.digits import ExactModel
from epd_core.mixture import two_blobs
from epd_core.rl import Cancelled, DirichletTablePolicy, RLConfig, denoiser_rollout, rl_tune
from epd_core.rl.loop import Validator
from epd_core.schedules import get_sigmas_polynomial
from epd_core.solver import StepConfig, run_epd, run_rows
from epd_core.tables import default_table

SIGMA_MAX = 20.0


MIX = two_blobs((0, 1))


def on_blob_reward(images: torch.Tensor, texts) -> torch.Tensor:
    """A known reward: minus the squared distance to the nearest blob centre (1 is the best possible, 0 far off)."""
    return -((images[:, None, :] - MIX.means[None]) ** 2).sum(-1).min(1).values


def noise(seed: int) -> torch.Tensor:
    return torch.randn(1, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * SIGMA_MAX


def start_table():
    sigmas = torch.cat([get_sigmas_polynomial(3, 0.05, SIGMA_MAX)[:-1], torch.zeros(1, dtype=torch.float64)])
    return default_table(sigmas, 2, form="direction")


def rollout(table, class_conditional: bool = True):
    def model_for(prompts):
        return ExactModel(MIX, torch.tensor(prompts) if class_conditional else None)

    return denoiser_rollout(model_for, noise, table.sigmas, StepConfig(form="direction"), lambda x: x)


def test_per_sample_rows_equal_the_table_when_every_sample_has_it() -> None:
    table = start_table()
    policy = DirichletTablePolicy(table, 1e9)  # kappa huge: every draw is the table up to ~1e-5
    draw = policy.sample(6, seed=0)
    x = torch.cat([noise(s) for s in range(6)])
    model = ExactModel(MIX, torch.tensor([0, 1]))
    per_sample = run_rows(model, x, table.sigmas, draw.rows(table.sigmas), StepConfig(form="direction"))
    shared = run_epd(model, x, table.sigmas, params=table, form="direction")
    assert (per_sample - shared).abs().max() < 1e-3
    # Different tables per sample give different results, and each matches its own single-table run.
    draw = DirichletTablePolicy(table, 5.0).sample(2, seed=1)
    both = run_rows(model, x[:2], table.sigmas, draw.rows(table.sigmas), StepConfig(form="direction"))
    for i in range(2):
        alone = run_rows(ExactModel(MIX, torch.tensor([i])), x[i : i + 1], table.sigmas, draw[i : i + 1].rows(table.sigmas),
                         StepConfig(form="direction"))  # fmt: skip
        assert torch.allclose(both[i], alone[0], atol=1e-10)


def test_a_tiny_rl_run_raises_the_reward_on_held_out_seeds() -> None:
    table = start_table()
    config = RLConfig(iterations=15, prompts_per_step=2, group_size=8, lr=1e-3, eval_every=5, eval_per_prompt=64)
    before, _ = Validator(rollout(table), on_blob_reward, ["a", "b"], config._replace(seed=99))(table)
    stats = list(rl_tune(table, rollout(table), on_blob_reward, ["a", "b"], config))
    after, _ = Validator(rollout(table), on_blob_reward, ["a", "b"], config._replace(seed=99))(stats[-1].best_table)
    assert len(stats) == 15 and stats[-1].best_val_reward >= stats[0].best_val_reward
    assert -after < 0.25 * -before, (before, after)  # measured: squared distance 0.010 -> 0.0002
    assert stats[-1].best_table.metadata["rl_iterations"] > 0


def test_deterministic_for_a_fixed_seed() -> None:
    table = start_table()
    config = RLConfig(iterations=3, group_size=4, eval_every=3, eval_per_prompt=4)
    runs = [list(rl_tune(table, rollout(table), on_blob_reward, ["a", "b"], config)) for _ in range(2)]
    assert [s.mean_reward for s in runs[0]] == [s.mean_reward for s in runs[1]]
    assert torch.equal(runs[0][-1].best_table.r_logits, runs[1][-1].best_table.r_logits)


def test_cancel_inside_a_rollout_ends_the_run_with_the_best_table() -> None:
    table = start_table()
    inner = rollout(table)
    calls = {"n": 0}

    def cancelling(rows, prompts, seeds):
        calls["n"] += 1
        if calls["n"] > 4:
            raise Cancelled
        return inner(rows, prompts, seeds)

    config = RLConfig(iterations=50, group_size=4, eval_every=2, eval_per_prompt=8)
    stats = list(rl_tune(table, cancelling, on_blob_reward, ["a", "b"], config))
    assert 1 <= len(stats) < 50 and stats[-1].best_table is not None


def test_should_stop_and_the_policy_object_is_updated_in_place() -> None:
    table = start_table()
    policy = DirichletTablePolicy(table, 20.0)
    config = RLConfig(iterations=10, group_size=4, eval_every=10, eval_per_prompt=2)
    stats = list(rl_tune(policy, rollout(table), on_blob_reward, ["a", "b"], config, should_stop=lambda: False))
    assert len(stats) == 10 and float(policy.kl_to_base().detach()) > 0
    stopped = list(rl_tune(table, rollout(table), on_blob_reward, ["a", "b"], config, should_stop=lambda: True))
    assert stopped == []


def test_bad_settings_are_reported_together_before_compute() -> None:
    def never(*_):
        raise AssertionError("no rollout may run")

    config = RLConfig(group_size=1, grouping="columns", lr=0.0)
    with pytest.raises(ValueError) as err:
        next(rl_tune(start_table(), never, on_blob_reward, ["a"], config))
    message = str(err.value)
    assert "group_size=1" in message and "grouping='columns'" in message and "lr > 0" in message
