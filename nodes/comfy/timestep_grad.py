"""Gradients through the timestep rounding of discrete models (SD1.5, SDXL) while a table is learned.

ComfyUI's ``ModelSamplingDiscrete.timestep`` maps a sigma to the index of the nearest of its 1000
training sigmas (an argmin), so the model's time input carries no gradient: when EPD Distill moves
an intermediate point's sigma, the loss sees how the input scaling changes but not how the
network's output changes with its time. Continuous models (EDM, flow) pass a smooth time and do not
lose it. During training the rounding gets a straight-through gradient: the forward value is the
same rounded index (sampling is unchanged, bit for bit), the backward uses the derivative of the
continuous index, which is the inverse of ``ModelSamplingDiscrete.sigma``'s interpolation (linear in
log sigma between neighbouring indices).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import comfy.model_sampling
import torch


class _StraightThrough(torch.autograd.Function):
    """Forward: the rounded value. Backward: the gradient of the continuous one."""

    @staticmethod
    def forward(ctx: Any, continuous: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
        return rounded.to(continuous.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def continuous_timestep(log_sigmas: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The fractional index t with ModelSamplingDiscrete.sigma(t) == sigma (log_sigmas ascending)."""
    log_sigma = sigma.log().to(log_sigmas.device, log_sigmas.dtype)
    hi = torch.searchsorted(log_sigmas, log_sigma.detach().reshape(-1).contiguous())
    hi = hi.clamp(1, len(log_sigmas) - 1).view(log_sigma.shape)
    lo_value, hi_value = log_sigmas[hi - 1], log_sigmas[hi]
    return (hi - 1) + (log_sigma - lo_value) / (hi_value - lo_value)


def rounds_timesteps(model_sampling: Any) -> bool:
    """Whether this model sampling rounds with ModelSamplingDiscrete's own argmin (not a subclass's override)."""
    return (
        isinstance(model_sampling, comfy.model_sampling.ModelSamplingDiscrete)
        and type(model_sampling).timestep is comfy.model_sampling.ModelSamplingDiscrete.timestep
    )


@contextlib.contextmanager
def timestep_gradients(model_sampling: Any) -> Iterator[bool]:
    """For the block, a discrete model's rounded timestep passes a gradient; yields whether it applied."""
    if not rounds_timesteps(model_sampling) or "timestep" in vars(model_sampling):
        yield False
        return
    rounded_timestep = model_sampling.timestep

    def timestep(sigma: torch.Tensor) -> torch.Tensor:
        rounded = rounded_timestep(sigma)
        if not (torch.is_grad_enabled() and sigma.requires_grad):
            return rounded
        continuous = continuous_timestep(model_sampling.log_sigmas, sigma).to(sigma.device)
        return _StraightThrough.apply(continuous, rounded)

    model_sampling.timestep = timestep  # an instance attribute shadows the class's method
    try:
        yield True
    finally:
        del model_sampling.timestep
