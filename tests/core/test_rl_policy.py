"""The RDPO policy and objective (docs/training.md), float64."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Dirichlet

from epd_core.grids import epd_sigmas
from epd_core.params import EPDParams
from epd_core.rl import DirichletTablePolicy, group_ids, load_policy, loo_advantages, ppo_loss, save_policy
from epd_core.rl.policy import TableDraw
from epd_core.tables import default_table


def table(points: int = 2, scale: float = 0.05) -> EPDParams:
    base = default_table(epd_sigmas(4, 0.002, 80.0), points, form="direction", afs=True)
    return base.replace(scale_dir=scale, scale_time=scale) if scale else base


def unsorted_table() -> EPDParams:
    """Rows whose points are not in increasing r, with distinct weights and scales per point."""
    r = torch.tensor([[0.7, 0.2, 0.5], [0.1, 0.9, 0.4]], dtype=torch.float64)
    lam = torch.tensor([[0.5, 0.2, 0.3], [0.6, 0.1, 0.3]], dtype=torch.float64)
    c = torch.tensor([[1.02, 0.99, 1.0], [0.97, 1.01, 1.03]], dtype=torch.float64)
    return EPDParams.from_values(r, lam, torch.tensor([10.0, 1.0, 0.0]), c=c, a=2 - c, scale_dir=0.05, scale_time=0.05)


@pytest.mark.parametrize("learn_scales", [False, True])
@pytest.mark.parametrize("make", [table, unsorted_table])
def test_policy_at_initialisation_reproduces_the_table_mean(make, learn_scales: bool) -> None:
    start = make()
    mean = DirichletTablePolicy(start, 20.0, learn_scales=learn_scales).mean_table()
    order = start.r.argsort(-1)
    for name in ("r", "lam", "c", "a"):
        expected = getattr(start, name).gather(-1, order)
        assert torch.allclose(getattr(mean, name), expected, atol=1e-9, rtol=0), name
    assert torch.allclose(mean.tau(), start.tau().gather(-1, order), rtol=1e-12, atol=0)
    assert mean.afs == start.afs and torch.equal(mean.sigmas, start.sigmas)


def explicit_dirichlet_log_prob(alpha: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Dir(x; alpha) = lgamma(sum alpha) - sum lgamma(alpha) + sum (alpha - 1) log x."""
    return torch.lgamma(alpha.sum(-1)) - torch.lgamma(alpha).sum(-1) + ((alpha - 1) * x.log()).sum(-1)


def test_log_prob_matches_torch_distributions_and_the_density_formula() -> None:
    policy = DirichletTablePolicy(table(3, scale=0.0), 10.0)
    with torch.no_grad():
        policy.head.bias.normal_(0, 0.3)  # move off the base so the residual is exercised
    draw = policy.sample(6, seed=1)
    dists = policy.distributions()
    alpha_pos, alpha_w = dists["positions"].concentration, dists["weights"].concentration
    expected = explicit_dirichlet_log_prob(alpha_pos, draw.segments).sum(-1)
    expected = expected + explicit_dirichlet_log_prob(alpha_w, draw.weights).sum(-1)
    reference = Dirichlet(alpha_pos).log_prob(draw.segments).sum(-1) + Dirichlet(alpha_w).log_prob(draw.weights).sum(-1)
    got = policy.log_prob(draw)
    assert torch.allclose(got, expected, atol=1e-10) and torch.allclose(got, reference, atol=1e-12)


def test_samples_are_valid_ordered_tables_and_deterministic_per_seed() -> None:
    policy = DirichletTablePolicy(table(3), 20.0, learn_scales=True)
    draw = policy.sample(64, seed=7)
    r = draw.positions
    assert bool(((r > 0) & (r < 1)).all()) and bool((r.diff(dim=-1) > 0).all())
    assert torch.allclose(draw.weights.sum(-1), torch.ones(64, 4, dtype=torch.float64))
    assert draw.scales is not None and bool((draw.scales > 0).all())
    again = policy.sample(64, seed=7)
    assert torch.equal(again.segments, draw.segments) and torch.equal(again.scales, draw.scales)
    rows = draw.rows(policy.sigmas)
    assert len(rows) == 4 and rows[0].tau.shape == (3, 64)


def test_spread_shrinks_with_the_concentration() -> None:
    spreads = [DirichletTablePolicy(table(), k).sample(4000, seed=0).positions.std(0).mean() for k in (5.0, 50.0)]
    assert spreads[1] < 0.5 * spreads[0]


def test_kl_to_the_start_is_zero_at_init_and_positive_after_a_move() -> None:
    policy = DirichletTablePolicy(table(), 20.0, learn_scales=True)
    assert float(policy.kl_to_base().detach()) == 0.0
    with torch.no_grad():
        policy.head.bias.normal_(0, 0.2)
    assert float(policy.kl_to_base().detach()) > 1e-3


def test_learned_scales_are_exported_with_a_range_that_holds_them() -> None:
    policy = DirichletTablePolicy(table(scale=0.0), 20.0, learn_scales=True)
    with torch.no_grad():
        policy.head.bias[5:9] = torch.tensor([0.1, -0.08, 0.0, 0.05])  # loc of (c, a) for both points
    values = policy.mean_values()
    exported = policy.mean_table()
    assert exported.scale_dir > 0 and exported.scale_time > 0
    assert torch.allclose(exported.c, values["c"], atol=1e-9) and torch.allclose(exported.a, values["a"], atol=1e-9)


@pytest.mark.parametrize("grouping", ["prompt", "mixed"])
def test_advantages_sum_to_zero_within_each_group(grouping: str) -> None:
    groups = group_ids(grouping, num_prompts=3, group_size=4)
    rewards = torch.randn(12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for normalize in (False, True):
        adv = loo_advantages(rewards, groups, normalize)
        for g in groups.unique():
            assert abs(float(adv[groups == g].sum())) < 1e-12
    raw = loo_advantages(rewards, groups, normalize=False)
    first = groups == groups[0]
    others = rewards[first][1:]
    assert torch.isclose(raw[0], rewards[0] - others.mean())


def test_prompt_groups_share_a_prompt_and_mixed_groups_mix_them() -> None:
    prompts = torch.arange(8) % 2  # the cyclic layout: image i shows prompt i % P
    same = group_ids("prompt", 2, 4)
    assert all(len(prompts[same == g].unique()) == 1 for g in same.unique())
    mixed = group_ids("mixed", 2, 4)
    assert all(sorted(prompts[mixed == g].tolist()) == [0, 0, 1, 1] for g in mixed.unique())


def test_groups_need_two_images() -> None:
    with pytest.raises(ValueError, match="at least 2 images"):
        loo_advantages(torch.zeros(3), torch.tensor([0, 0, 1]))


def test_ppo_loss_clips_the_ratio() -> None:
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    old = torch.zeros(2, dtype=torch.float64)
    new = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)  # ratios e and 1/e, both outside 1 +/- 0.2
    loss = ppo_loss(new, old, adv, 0.2)
    loss.backward()
    assert torch.isclose(loss, torch.tensor((-1.2 + 0.8) / 2, dtype=torch.float64))
    assert torch.equal(new.grad, torch.zeros(2, dtype=torch.float64))


def test_policy_state_round_trips_and_refuses_other_files(tmp_path) -> None:
    policy = DirichletTablePolicy(table(), 15.0, learn_scales=True, hidden=16, layers=1)
    with torch.no_grad():
        policy.head.bias.normal_(0, 0.1)
    path = save_policy(policy, tmp_path / "p.safetensors", iterations=12)
    loaded, iterations = load_policy(path)
    draw = policy.sample(5, seed=3)
    assert iterations == 12 and loaded.concentration == 15.0
    assert torch.equal(loaded.log_prob(draw), policy.log_prob(draw))
    (tmp_path / "p.pt").write_bytes(b"\x80\x04junk")
    with pytest.raises(ValueError, match=r"only from \.safetensors"):
        load_policy(tmp_path / "p.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_policy(tmp_path / "bad.safetensors")


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="concentration"):
        DirichletTablePolicy(table(), 0.0)
    with pytest.raises(ValueError, match="draw has none"):
        DirichletTablePolicy(table(), 5.0, learn_scales=True).log_prob(
            TableDraw(
                torch.full((1, 4, 3), 1 / 3, dtype=torch.float64), torch.full((1, 4, 2), 0.5, dtype=torch.float64)
            )
        )
