"""The heavy-tailed exact mixture (epd_core.mixture.student_t_mixture), float64 CPU."""

from __future__ import annotations

import torch

from epd_core.mixture import _gamma_quantile, student_t_mixture


def test_gamma_quantiles_match_scipy():
    # scipy.stats.gamma.ppf([1/32, 1/2, 31/32], 1.5, scale=1/1.5), computed once (scipy is not a dependency).
    p = torch.tensor([1 / 32, 0.5, 31 / 32], dtype=torch.float64)
    expected = torch.tensor([0.08407138, 0.78865796, 2.95242335], dtype=torch.float64)
    torch.testing.assert_close(_gamma_quantile(1.5, p), expected, atol=1e-7, rtol=0)


def test_each_centre_is_a_scale_mixture_with_heavier_tails_than_a_gaussian():
    # 2 centres far apart in 2-d: 64 equal-weight Gaussians, 32 scales per centre. Around its centre a
    # coordinate has excess kurtosis well above a Gaussian's 0 (df 3 Student-t: infinite; the 32
    # levels cut the tail at 4.4x the scale; measured 6.5 on these draws).
    mix = student_t_mixture(dim=2, centres=2, spread=40.0, seed=1)
    assert mix.means.shape == (64, 2) and torch.allclose(mix.log_weights.exp().sum(), torch.tensor(1.0).double())
    x = mix.sample(40000, torch.Generator().manual_seed(2))
    near = x[(x - mix.means[0]).norm(dim=1) < 10] - mix.means[0]
    z = near[:, 0] / near[:, 0].std()
    assert (z**4).mean() - 3 > 1.0
    # the denoiser is the GaussianMixture one: at a tiny sigma it returns its input
    torch.testing.assert_close(mix.denoise(x[:5], 1e-6), x[:5], atol=1e-6, rtol=0)
