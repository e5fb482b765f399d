"""The grid EPD samples on by default (issue 2 benchmark: the best measured schedule).

A schedule with S + 1 points from sigma_max to sigma_min, with sigma_min replaced
by 0: the last EPD step lands on 0 directly, so no pair of rounds is spent on the
tiny [sigma_min, 0] interval (the same as dropping ComfyUI's penultimate sigma).
"""

from __future__ import annotations

from typing import Any

import torch

from .schedules import get_sigmas

DEFAULT_SCHEDULE = "time_uniform"


def epd_sigmas(
    num_steps: int, sigma_min: float, sigma_max: float, schedule: str = DEFAULT_SCHEDULE, **kw: Any
) -> torch.Tensor:
    """[num_steps + 1] float64 sigmas ending in 0 for a model with range [sigma_min, sigma_max]."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be at least 1")
    if schedule in ("discrete", "flowmatch"):
        grid = get_sigmas(schedule, num_steps + 1, **kw)
    else:
        grid = get_sigmas(schedule, num_steps + 1, sigma_min=sigma_min, sigma_max=sigma_max, **kw)
    return torch.cat([grid[:-1], grid.new_zeros(1)])
