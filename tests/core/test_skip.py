"""Start from a learned intermediate distribution (epd_core.skip, issue 16 B), float64 CPU."""

from __future__ import annotations

import math

import pytest
import torch

from epd_core.skip import FAMILIES, dip_statistic, fit_start, latent_scale, sample_start, suggest_sigma_star, ve_sigma

D = 4
MEAN = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
ROOT = torch.tensor([[0.5, 0.0, 0.0, 0.0], [0.3, 0.4, 0.0, 0.0], [0.0, 0.2, 0.3, 0.0], [0.1, 0.0, 0.0, 0.2]],
                    dtype=torch.float64)  # fmt: skip
COV = ROOT @ ROOT.T


def gauss(n: int, seed: int = 0) -> torch.Tensor:
    """n draws of N(MEAN, COV) [n, D]."""
    return MEAN + torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) @ ROOT.T


def moments(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = y.flatten(1)
    return y.mean(0), torch.cov(y.T)


def test_full_gaussian_start_is_the_noised_data_distribution():
    # Data N(m, C) noised at s = 0.7 is N(m, C + s^2 I). 20000 fit samples and 20000 draws:
    # the standard error of a mean entry is about sqrt(0.75 / 20000) ~ 0.006, so 0.03 is ~5 SE.
    s = 0.7
    model = fit_start(gauss(20000), s, "gaussian")
    mean, cov = moments(sample_start(model, 20000, torch.Generator().manual_seed(1)))
    torch.testing.assert_close(mean, MEAN, atol=0.03, rtol=0)
    torch.testing.assert_close(cov, COV + s**2 * torch.eye(D, dtype=torch.float64), atol=0.04, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_keeps_mean_and_total_variance(family):
    # Each family matches the mean; diagonal, lowrank (rank 3 + floor) and GMM keep the per-axis variance.
    s = 0.3
    model = fit_start(gauss(4000).reshape(4000, 2, 2), s, family, rank=3, components=3, steps=100)
    y = sample_start(model, 20000, torch.Generator().manual_seed(2))
    assert y.shape == (20000, 2, 2)
    mean, cov = moments(y)
    torch.testing.assert_close(mean, MEAN, atol=0.05, rtol=0)
    torch.testing.assert_close(cov.diagonal(), COV.diagonal() + s**2, atol=0.06, rtol=0.1)


def test_gmm_separates_two_clusters():
    # Clusters at -3 and +3 (std 0.1) in 2-D: EM finds both; a single Gaussian would put mass at 0.
    gen = torch.Generator().manual_seed(3)
    centres = torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    data = centres[torch.arange(400) % 2] + 0.1 * torch.randn(400, 2, generator=gen, dtype=torch.float64)
    y = sample_start(fit_start(data, 0.05, "gmm", components=2), 2000, gen)
    assert (y[:, 0].abs() > 2.0).float().mean() > 0.99


def test_flow_scaling_never_shrinks_twice():
    # Flow state x_t = (1 - t) x0 + t n. Dividing by (1 - t) gives x0 + s n with s = t / (1 - t),
    # the VE draw; the sampler's state is (1 - t) * y. For eps-type models both maps are the identity.
    t = 0.6
    assert ve_sigma(t, "flow") == pytest.approx(1.5)
    assert latent_scale(t, "flow") == pytest.approx(0.4)
    assert ve_sigma(t, "ve") == t and latent_scale(t, "ve") == 1.0
    x0, n = gauss(20000), torch.randn(20000, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = sample_start(fit_start(x0, ve_sigma(t, "flow"), "gaussian"), 20000, torch.Generator().manual_seed(5))
    flow_state = (1 - t) * x0 + t * n
    torch.testing.assert_close(moments(latent_scale(t, "flow") * y)[1], moments(flow_state)[1], atol=0.02, rtol=0)


def test_dip_statistic_golden_values():
    # Reference values from the diptest package (Hartigan's AS 217, C++ port) on the same draws;
    # equispaced points have the minimum dip 1 / (2n).
    gen = torch.Generator().manual_seed(3)
    uniform = torch.rand(50, generator=gen, dtype=torch.float64)
    bimodal = torch.cat([torch.randn(30, generator=gen, dtype=torch.float64),
                         5 + torch.randn(30, generator=gen, dtype=torch.float64)])  # fmt: skip
    normal = torch.randn(200, generator=gen, dtype=torch.float64)
    assert dip_statistic(uniform) == pytest.approx(0.049031257679866706, abs=1e-9)
    assert dip_statistic(bimodal) == pytest.approx(0.08951708466823369, abs=1e-9)
    assert dip_statistic(normal) == pytest.approx(0.019192801282746367, abs=1e-9)
    assert dip_statistic(torch.arange(100.0)) == pytest.approx(1 / 200)


def test_suggested_sigma_star_sits_where_two_clusters_merge():
    # Clusters at +-2 (std 0.1): the noised mixture is bimodal while sigma < ~2 (a > sqrt(s^2 + sigma^2));
    # a finite-sample test detects it somewhat earlier, so sigma* lies between 0.5 and 2.2.
    gen = torch.Generator().manual_seed(6)
    data = torch.tensor([[2.0, 0.0], [-2.0, 0.0]], dtype=torch.float64)[torch.arange(300) % 2]
    data = data + 0.1 * torch.randn(300, 2, generator=gen, dtype=torch.float64)
    sigma = suggest_sigma_star(data, projections=8, null_draws=50, bisections=8)
    assert 0.5 < sigma < 2.2


@pytest.mark.parametrize(
    ("n", "family", "options", "message"),
    [
        (0, "diagonal", {}, "no reference samples"),
        (1, "diagonal", {}, "at least 2 reference samples"),
        (3, "gaussian", {}, r"more samples than dimensions: got 3 samples of dimension 4.*'lowrank'.*'diagonal'"),
        (5, "lowrank", {"rank": 5}, "rank must be between 1 and .* 4, got 5"),
        (5, "gmm", {"components": 3}, "needs at least 6 samples, got 5.*'diagonal'"),
        (5, "tarflow", {}, "unknown family .tarflow.; choose one of gaussian.*normalizing_flow"),
    ],
)
def test_bad_input_is_rejected_with_the_fix(n, family, options, message):
    with pytest.raises(ValueError, match=message):
        fit_start(gauss(max(n, 1))[:n], 0.5, family, **options)


@pytest.mark.parametrize(("sigma", "kind"), [(1.0, "flow"), (0.0, "flow"), (1.5, "flow")])
def test_flow_sigma_star_outside_0_1_is_rejected(sigma, kind):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        ve_sigma(sigma, kind)


def test_nonpositive_sigma_and_nonfinite_data_are_rejected():
    with pytest.raises(ValueError, match="positive finite VE sigma, got -1"):
        fit_start(gauss(10), -1.0)
    bad = gauss(10)
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_start(bad, 0.5)
