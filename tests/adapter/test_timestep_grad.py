"""The straight-through timestep of discrete models during training (nodes/comfy/timestep_grad.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfy.model_sampling
import torch
from comfyui_epd.nodes.comfy.timestep_grad import continuous_timestep, timestep_gradients


def discrete() -> comfy.model_sampling.ModelSamplingDiscrete:
    return comfy.model_sampling.ModelSamplingDiscrete()  # SD1.5's scaled-linear 1000-step schedule


def test_the_continuous_index_inverts_comfys_own_interpolation() -> None:
    ms = discrete()
    t = torch.tensor([0.0, 0.25, 17.5, 500.9, 998.3, 999.0])
    torch.testing.assert_close(continuous_timestep(ms.log_sigmas, ms.sigma(t)), t, rtol=0, atol=2e-3)


def test_forward_is_comfys_rounding_and_backward_the_continuous_slope() -> None:
    ms = discrete()
    sigma = torch.tensor([0.03, 0.5, 1.7, 7.9, 14.0], requires_grad=True)
    expected = ms.timestep(sigma.detach())
    with timestep_gradients(ms) as applied:
        t = ms.timestep(sigma)
        t.sum().backward()
    assert applied and torch.equal(t.detach(), expected.float()), "the model sees the same rounded index"
    # dt/dsigma of the continuous index: 1 / (sigma * log-sigma spacing around sigma).
    hi = torch.searchsorted(ms.log_sigmas, sigma.detach().log())
    slope = 1 / (sigma.detach() * (ms.log_sigmas[hi] - ms.log_sigmas[hi - 1]))
    torch.testing.assert_close(sigma.grad, slope, rtol=1e-4, atol=0)
    assert "timestep" not in vars(ms), "the class's own method is back after the block"
    assert ms.timestep(sigma).dtype == torch.int64 and not ms.timestep(sigma).requires_grad


def test_without_grad_it_is_the_original_call_and_continuous_models_are_left_alone() -> None:
    ms = discrete()
    sigma = torch.tensor([0.5, 3.0])
    with timestep_gradients(ms), torch.no_grad():
        assert ms.timestep(sigma).dtype == torch.int64
    for other in (comfy.model_sampling.ModelSamplingDiscreteFlow(), comfy.model_sampling.ModelSamplingContinuousEDM()):
        with timestep_gradients(other) as applied:
            assert not applied and "timestep" not in vars(other)
