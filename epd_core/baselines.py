"""Classic deterministic solvers on the same denoiser contract: demo baselines and teachers.

Euler, Heun (Karras et al. 2022, Alg. 1 without churn), DPM-Solver-2 (midpoint in
log-sigma, as k-diffusion's sample_dpm_2) and iPNDM (fixed Adams-Bashforth
coefficients, as zju-pi/diff-sampler). Distillation uses Heun and DPM-Solver-2 as
teachers (docs/training.md). A step that ends at sigma = 0 falls back to Euler,
as k-diffusion does, because the midpoint and the trapezoid need sigma_next > 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch

from .solver import adams_bashforth


def _d(model: Callable, x: torch.Tensor, sigma: float, extra_args: dict[str, Any]) -> torch.Tensor:
    """Direction (x - D(x, sigma)) / sigma at one sigma for the whole batch."""
    return (x - model(x, sigma * x.new_ones([x.shape[0]]), **extra_args)) / sigma


def _steps(sigmas: torch.Tensor) -> list[tuple[float, float]]:
    return list(itertools.pairwise(sigmas.tolist()))


def run_euler(model, x, sigmas, extra_args=None) -> torch.Tensor:
    """Euler: one evaluation per step."""
    extra_args = {} if extra_args is None else extra_args
    for sigma, sigma_next in _steps(sigmas):
        x = x + (sigma_next - sigma) * _d(model, x, sigma, extra_args)
    return x


def run_heun(model, x, sigmas, extra_args=None) -> torch.Tensor:
    """Heun's trapezoid: two evaluations per step, one on a step to 0."""
    extra_args = {} if extra_args is None else extra_args
    for sigma, sigma_next in _steps(sigmas):
        d = _d(model, x, sigma, extra_args)
        x_euler = x + (sigma_next - sigma) * d
        if sigma_next == 0:
            x = x_euler
        else:
            x = x + (sigma_next - sigma) * (d + _d(model, x_euler, sigma_next, extra_args)) / 2
    return x


def run_dpm2(model, x, sigmas, extra_args=None) -> torch.Tensor:
    """DPM-Solver-2 midpoint (r = 1/2 in log sigma): two evaluations per step, one on a step to 0."""
    extra_args = {} if extra_args is None else extra_args
    for sigma, sigma_next in _steps(sigmas):
        d = _d(model, x, sigma, extra_args)
        if sigma_next == 0:
            x = x + (sigma_next - sigma) * d
            continue
        sigma_mid = math.sqrt(sigma * sigma_next)
        x_mid = x + (sigma_mid - sigma) * d
        x = x + (sigma_next - sigma) * _d(model, x_mid, sigma_mid, extra_args)
    return x


def run_ipndm(model, x, sigmas, extra_args=None, max_order: int = 4) -> torch.Tensor:
    """iPNDM: Adams-Bashforth over past directions with fixed coefficients, one evaluation per step."""
    extra_args = {} if extra_args is None else extra_args
    history: list[torch.Tensor] = []
    for sigma, sigma_next in _steps(sigmas):
        d = _d(model, x, sigma, extra_args)
        x = x + (sigma_next - sigma) * adams_bashforth(d, history, max_order)
        history = (history + [d])[-(max_order - 1) :]
    return x


BASELINES: dict[str, tuple[Callable[..., torch.Tensor], int]] = {
    # name: (solver, model evaluations per step before the final step to 0)
    "euler": (run_euler, 1),
    "heun": (run_heun, 2),
    "dpm_2": (run_dpm2, 2),
    "ipndm": (run_ipndm, 1),
}
