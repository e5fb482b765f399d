"""A fixed pool of training noise whose teacher targets are computed once (Stage 1 speed-up).

The teacher costs M + 1 times the student's model calls per step (docs/training.md), so on
fresh noise it dominates every iteration. A pool of P noise batches, each run through the
teacher once and revisited in a new order every epoch, pays that cost P times instead of once
per iteration. The table has a few dozen parameters, so a few hundred noise samples do not let
it overfit; the loop's validation batch stays fresh noise.

``DistillConfig.pool_batches`` keeps the loop's first P batches as they come (so a run shows
progress and can be cancelled from its first iteration); ``make_pool`` builds a pool in advance,
to share one between runs (a pixel stage, then a refinement).

Batches are kept whole: row b of a pooled batch is row b of the batch the teacher saw, so a
model that conditions by row position (a prompt per row) sees the same conditioning for the
student and its target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

from .teacher import teacher_trajectory

NoiseFn = Callable[[int, torch.Generator], torch.Tensor]


class TeacherPool(NamedTuple):
    noise: list[torch.Tensor]  # P batches [B, ...] at sigmas[0]
    targets: list[list[torch.Tensor]]  # per batch: teacher states at sigmas[1:] (only the last one if final_only)
    sigmas: torch.Tensor  # the grid the teacher ran on (float64)
    teacher: str
    inserted: int

    @property
    def batch(self) -> int:
        return self.noise[0].shape[0]


def make_pool(
    model: Callable[..., torch.Tensor],
    noise_fn: NoiseFn,
    batches: int,
    batch: int,
    sigmas: torch.Tensor,
    gen: torch.Generator,
    *,
    teacher: str,
    inserted: int,
    extra_args: dict[str, Any] | None = None,
    final_only: bool = True,
) -> TeacherPool:
    """``batches`` noise batches of ``batch`` rows from noise_fn and their teacher states on ``sigmas``."""
    noise, targets = [], []
    for _ in range(batches):
        x = noise_fn(batch, gen)
        states = teacher_trajectory(model, x, sigmas, teacher=teacher, inserted=inserted, extra_args=extra_args)
        noise.append(x)
        targets.append(states[-1:] if final_only else states)
    return TeacherPool(noise, targets, sigmas.double().cpu(), teacher, inserted)


def pool_order(batches: int, gen: torch.Generator) -> Iterator[int]:
    """Batch indices forever: every index once per epoch, in a fresh random order each epoch."""
    while True:
        yield from torch.randperm(batches, generator=gen).tolist()


def pool_problems(pool: TeacherPool, config: Any, sigmas: torch.Tensor) -> list[str]:
    """Why ``pool`` cannot serve a run of ``config`` on ``sigmas`` (empty when it can)."""
    problems = []
    if config.targets == "local":
        problems.append(
            "a teacher pool cannot serve targets='local' (its teacher restarts from the student's state); "
            "set teacher_pool to 0 for local targets"
        )
    if config.targets == "global" and config.learn_sigmas:
        problems.append(
            "a teacher pool's per-step targets sit on the starting grid, so learn_sigmas needs targets='final' "
            "(or teacher_pool 0)"
        )
    if pool is None:
        return problems
    if pool.batch != config.batch:
        problems.append(f"the teacher pool has batches of {pool.batch}, the config asks for {config.batch}")
    if (pool.teacher, pool.inserted) != (config.teacher, config.inserted):
        problems.append(
            f"the teacher pool was made by {pool.teacher} with M={pool.inserted}, "
            f"the config asks for {config.teacher} with M={config.inserted}"
        )
    same_grid = len(pool.sigmas) == len(sigmas) and torch.allclose(pool.sigmas, sigmas.double().cpu())
    if not same_grid and (config.targets != "final" or pool.sigmas[0] != sigmas[0]):
        problems.append("the teacher pool was made on a different grid; make it on the starting table's grid")
    if config.targets == "global" and len(pool.targets[0]) != len(sigmas) - 1:
        problems.append("the teacher pool holds final states only; global targets need make_pool(final_only=False)")
    return problems
