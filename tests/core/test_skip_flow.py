"""The small normalizing-flow start model (epd_core.skip.flow) and start-model files (store.py), float64 CPU."""

from __future__ import annotations

import pytest
import torch

from epd_core.skip import FlowStart, fit_start, flow_log_prob, load_start, sample_start, save_start
from epd_core.skip.flow import _gamma, fit_flow


@pytest.fixture(autouse=True)
def one_thread():
    """Small-tensor training: a second thread only adds overhead (30x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def banana(n: int, seed: int) -> torch.Tensor:
    """A curved, skewed 2-D distribution: (a, a^2 / 2 + 0.3 b - 1), a, b ~ N(0, 1)."""
    ab = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.stack([ab[:, 0], 0.5 * ab[:, 0] ** 2 + 0.3 * ab[:, 1] - 1.0], dim=1)


def gaussian_log_prob(model, y: torch.Tensor) -> torch.Tensor:
    """log density of the 'gaussian' family's one component, covariance L L^T + diag(var)."""
    cov = model.factors[0] @ model.factors[0].T + torch.diag(model.var[0])
    return torch.distributions.MultivariateNormal(model.means[0], cov).log_prob(y)


def test_samples_have_the_shape_and_dtype_and_repeat_with_the_seed():
    data = torch.randn(12, 2, 3, 3, generator=torch.Generator().manual_seed(0))  # float32 latents, D = 18
    model = fit_start(data, 1.5, "normalizing_flow", rank=4, steps=20, seed=3)
    assert isinstance(model, FlowStart) and model.basis.shape == (18, 4)
    y = sample_start(model, 5, torch.Generator().manual_seed(1))
    assert y.shape == (5, 2, 3, 3) and y.dtype == torch.float64 and torch.isfinite(y).all()
    again = fit_start(data, 1.5, "normalizing_flow", rank=4, steps=20, seed=3)
    torch.testing.assert_close(sample_start(again, 5, torch.Generator().manual_seed(1)), y, rtol=0, atol=0)
    other = fit_start(data, 1.5, "normalizing_flow", rank=4, steps=20, seed=4)
    assert not torch.equal(sample_start(other, 5, torch.Generator().manual_seed(1)), y)


def test_flow_beats_the_gaussian_likelihood_on_a_banana():
    # Held-out noised data: the flow must find the curvature a Gaussian misses. Measured -1.94 nats per
    # sample for the flow (100 steps) against -2.54 for the fitted full Gaussian; 0.3 nats is a safe margin.
    s = 0.2
    fit_data = banana(2000, 0)
    held_out = banana(2000, 1) + s * torch.randn(2000, 2, generator=torch.Generator().manual_seed(2),
                                                 dtype=torch.float64)  # fmt: skip
    flow = fit_flow(fit_data, (2,), s, rank=2, steps=100, batch=64, seed=0)
    gauss = fit_start(fit_data, s, "gaussian")
    assert flow_log_prob(flow, held_out).mean() > gaussian_log_prob(gauss, held_out).mean() + 0.3


def test_rest_of_the_space_gets_the_floor_plus_the_noise():
    # Data N(0, diag(4, 1, 0.25, 0.25, 0.25, 0.25)) with rank 2: the flow models the two large axes,
    # the other four get the mean leftover variance 0.25 plus s^2 = 0.36: 0.61 each. 20000 draws:
    # standard error of a variance ~ 0.61 * sqrt(2 / 20000) ~ 0.006; the flow axes get 5 %.
    s = 0.6
    std = torch.tensor([2.0, 1.0, 0.5, 0.5, 0.5, 0.5], dtype=torch.float64)
    data = torch.randn(4000, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * std
    model = fit_flow(data, (6,), s, rank=2, steps=100, batch=64, seed=0)
    var = sample_start(model, 20000, torch.Generator().manual_seed(6)).var(0)
    torch.testing.assert_close(var[2:], torch.full((4,), 0.61, dtype=torch.float64), atol=0.04, rtol=0)
    torch.testing.assert_close(var[:2], std[:2] ** 2 + s**2, rtol=0.08, atol=0)


def test_heavy_tails_lower_the_learned_degrees_of_freedom():
    # Independent Student-t(2) coordinates (scale 1), barely noised: maximum likelihood pulls the
    # base's df from its start of 30 toward the data's 2 (measured 4.3 and 2.5 after 300 steps).
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(4000, 2, generator=gen, dtype=torch.float64)
    t2 = z / torch.sqrt(2.0 * _gamma(torch.full((4000, 2), 1.0, dtype=torch.float64), gen) / 2.0)
    model = fit_flow(t2, (2,), 0.05, rank=2, steps=300, batch=128, seed=0)
    assert (1.0 + model.params["raw_df"].exp() < 12).all()


@pytest.mark.parametrize("shape", [0.5, 1.5, 15.0])
def test_gamma_draws_have_the_gamma_moments(shape):
    # Gamma(a, 1): mean a, variance a. 40000 draws: standard error of the mean sqrt(a / 40000).
    x = _gamma(torch.full((40000,), shape, dtype=torch.float64), torch.Generator().manual_seed(8))
    assert x.mean().item() == pytest.approx(shape, abs=5 * (shape / 40000) ** 0.5)
    assert x.var().item() == pytest.approx(shape, rel=0.06)


@pytest.mark.parametrize("family", ["diagonal", "gmm", "normalizing_flow"])
def test_safetensors_round_trip_gives_the_same_draws(tmp_path, family):
    data = torch.randn(30, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    model = fit_start(data, 0.8, family, rank=3, components=2, steps=10)
    save_start(model, tmp_path / "start.safetensors")
    loaded = load_start(tmp_path / "start.safetensors")
    assert (loaded.family, loaded.shape, loaded.sigma_ve) == (family, (4,), 0.8)
    draws = [sample_start(m, 7, torch.Generator().manual_seed(10)) for m in (model, loaded)]
    torch.testing.assert_close(draws[1], draws[0], rtol=0, atol=0)


def test_other_files_and_a_too_small_flow_are_rejected(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format_version": "1"})
    with pytest.raises(ValueError, match=r"is not a start model file .* family None"):
        load_start(tmp_path / "other.safetensors")
    data = torch.randn(10, 4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"normalizing flow needs rank >= 2.*got rank 1, 10 samples"):
        fit_start(data, 0.5, "normalizing_flow", rank=1)
    with pytest.raises(ValueError, match=r"at least 3 samples .* got rank 8, 2 samples"):
        fit_start(data[:2], 0.5, "normalizing_flow")
