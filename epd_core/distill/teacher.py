"""Teacher trajectories for Stage 1 distillation (docs/training.md).

Every student interval [sigma_n, sigma_{n+1}] is refined into M + 1 teacher
sub-steps, geometric in sigma. An interval that ends at 0 is refined down to
sigma_n * FLOOR_RATIO and closed with one Euler step, which is exact to O(sigma^2)
that close to 0. The teacher runs under no_grad from the same noise as the student.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..baselines import run_dpm2, run_euler, run_heun, run_ipndm
from ..solver import sample_epd

FLOOR_RATIO = 1e-3


def _epd_midpoint(model, x, sigmas, extra_args=None) -> torch.Tensor:
    return sample_epd(model, x, sigmas, extra_args, num_points=1, form="data")


TEACHERS: dict[str, Callable[..., torch.Tensor]] = {
    "heun": run_heun,
    "dpm_2": run_dpm2,
    "ipndm": run_ipndm,
    "euler": run_euler,
    "epd_midpoint": _epd_midpoint,
}


def teacher_solver(name: str) -> Callable[..., torch.Tensor]:
    if name not in TEACHERS:
        raise ValueError(f"teacher={name!r} is not one of {tuple(TEACHERS)}")
    return TEACHERS[name]


def refine_interval(sigma: float, sigma_next: float, inserted: int) -> torch.Tensor:
    """[inserted + 2] (or + 3 toward 0) float64 sigmas from sigma to sigma_next, geometric."""
    end = sigma_next if sigma_next > 0 else sigma * FLOOR_RATIO
    fine = torch.logspace(0, 1, inserted + 2, base=end / sigma, dtype=torch.float64) * sigma
    return fine if sigma_next > 0 else torch.cat([fine, fine.new_zeros(1)])


@torch.no_grad()
def teacher_step(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigma: float,
    sigma_next: float,
    *,
    teacher: str = "heun",
    inserted: int = 3,
    extra_args: dict[str, Any] | None = None,
) -> torch.Tensor:
    """The teacher's state at sigma_next, started from x at sigma."""
    return teacher_solver(teacher)(model, x, refine_interval(sigma, sigma_next, inserted), extra_args)


@torch.no_grad()
def teacher_trajectory(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    **options: Any,
) -> list[torch.Tensor]:
    """Teacher states at every student grid point sigmas[1:], from x at sigmas[0] (global targets)."""
    states = []
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        x = teacher_step(model, x, sigma, sigma_next, **options)
        states.append(x)
    return states
