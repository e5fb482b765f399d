"""The two headless runs: ``distill`` and ``rl_tune`` on this rank's share, rank 0 writing the files."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..distill import distill
from ..rl import denoiser_rollout, load_policy, make_policy, rl_tune, save_policy
from ..rl.rewards import WEIGHT_FREE
from ..solver import StepConfig
from ..table_io import save_table
from .comm import Ranks, rank_seed
from .config import TuneSetup, resolve, split_evenly

Write = Callable[[str], None]


class DigitsPrompted:
    """The exact digits mixture conditioned on ``prompts`` (class indices, tiled over the rows)."""

    def __init__(self) -> None:
        from ..digits import ExactModel, digits_mixture

        self.mixture, self.exact = digits_mixture(), ExactModel

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, prompts: torch.Tensor | None = None, **_: Any):
        return self.exact(self.mixture, prompts)(x, sigma)


def digits_class_reward(mixture) -> Callable[[torch.Tensor, Sequence[str]], torch.Tensor]:
    """reward = minus the mean squared pixel distance to the nearest component mean of the prompt's digit."""

    def reward(images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        x = (images[..., 0].flatten(1).double() * 2 - 1)[:, None, :]  # [B, 1, 64] back in [-1, 1]
        dist = ((x - mixture.means[None]) ** 2).mean(-1)  # [B, J]
        wrong = mixture.labels[None, :] != torch.tensor([int(t) for t in texts])[:, None]
        return -dist.masked_fill(wrong, math.inf).min(1).values

    return reward


def to_images(x: torch.Tensor) -> torch.Tensor:
    """Samples [B, D] (D square) or [B, C, H, W] in [-1, 1] -> the reward protocol's [B, H, W, 3] in [0, 1]."""
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        x = x.reshape(x.shape[0], 1, side, side)
    images = ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).float()
    return images.expand(-1, -1, -1, 3) if images.shape[-1] == 1 else images


def timed(stats: Iterator[Any]) -> Iterator[tuple[Any, float]]:
    """Each item of a loop with the wall time it took."""
    started = time.perf_counter()
    for item in stats:
        yield item, time.perf_counter() - started
        started = time.perf_counter()


def record(ranks: Ranks, log, row: dict[str, Any]) -> None:
    row |= {"rank": ranks.rank, "world": ranks.world, "reduced_bytes": ranks.reduced_bytes}
    if ranks.keep_digests:
        row["digests"], ranks.digests[:] = list(ranks.digests), []
    if log is not None:
        log.write(json.dumps(row) + "\n")
        log.flush()


def open_log(setup: TuneSetup, ranks: Ranks):
    return None if setup.log is None else open(f"{setup.log}.rank{ranks.rank}", "w", encoding="utf-8")


def run_distill(setup: TuneSetup, ranks: Ranks, write: Write) -> Path:
    """Stage 1 on this rank's share of every batch; returns the table's path."""
    cfg = setup.loop
    local = cfg._replace(batch=split_evenly(cfg.batch, ranks.world, "batch"), seed=rank_seed(cfg.seed, ranks.rank))
    if not ranks.is_main:  # validation is rank 0's; the others check once at the end on their own batch size
        local = local._replace(eval_every=cfg.iterations, val_batch=local.batch)
    if setup.model == "digits":
        from ..digits import ExactModel, digits_mixture

        model = ExactModel(digits_mixture())
    else:
        model = resolve(setup.model)
    start = setup.start_table()
    step_config = StepConfig(kind=setup.kind, form=setup.form, afs=start.afs)
    log, written, stats = open_log(setup, ranks), None, None
    meta = {"provenance": "distilled", "teacher": cfg.teacher, "teacher_substeps": cfg.inserted,
            "targets": cfg.targets, "model": setup.model, "world_size": ranks.world, "headless": True}  # fmt: skip
    loop = distill(model, start, setup.noise, local, step_config=step_config, grad_hook=ranks.hook)
    for stats, seconds in timed(loop):
        record(ranks, log, {"iteration": stats.iteration, "loss": stats.loss, "lr": stats.lr,
                            "val_error": stats.val_error, "best_val_error": stats.best_val_error, "seconds": seconds})  # fmt: skip
        if ranks.is_main and stats.best_val_error != written:
            save_table(stats.best_table.replace(metadata={**dict(stats.best_table.metadata), **meta}), setup.out)
            written = stats.best_val_error
        if ranks.is_main:
            write(f"iter {stats.iteration:5d}  loss {stats.loss:.5f}  val {stats.val_error}  best {stats.best_val_error:.5f}  {seconds:.2f}s\n")  # fmt: skip
    if ranks.is_main and written is None:
        save_table(stats.best_table.replace(metadata={**dict(stats.best_table.metadata), **meta}), setup.out)
    return Path(setup.out)


def rl_model_for(setup: TuneSetup, offset: int) -> Callable[[list[int]], Callable[..., torch.Tensor]]:
    """model_for(prompts): the RL denoiser called with ``prompts=`` this rank's class indices."""
    model = DigitsPrompted() if setup.model == "digits" else resolve(setup.model)
    count = len(setup.texts)

    def model_for(prompts: list[int]):
        classes = torch.tensor([(p + offset) % count for p in prompts])
        return lambda x, sigma, **kw: model(x, sigma, prompts=classes, **kw)

    return model_for


def rl_reward(setup: TuneSetup):
    if setup.reward == "digits_class":
        from ..digits import digits_mixture

        return digits_class_reward(digits_mixture())
    return WEIGHT_FREE[setup.reward]() if setup.reward in WEIGHT_FREE else resolve(setup.reward)


def run_rl(setup: TuneSetup, ranks: Ranks, write: Write) -> Path:
    """RDPO with whole prompt groups per rank (module docstring); returns the table's path."""
    cfg = setup.loop
    local_prompts = split_evenly(cfg.prompts_per_step, ranks.world, "prompts_per_step")
    policy, done = load_policy(setup.resume) if setup.resume else (make_policy(setup.start_table(), cfg), 0)
    if done >= cfg.iterations:
        write(f"the policy has done {done} of {cfg.iterations} iterations already; nothing to do\n")
        return Path(setup.out)
    local = cfg._replace(prompts_per_step=local_prompts, seed=rank_seed(cfg.seed, ranks.rank, done, ranks.world),
                         iterations=cfg.iterations - done)  # fmt: skip
    if not ranks.is_main:
        local = local._replace(eval_every=local.iterations, eval_per_prompt=1)
    offset = ranks.rank * local_prompts  # rank r's prompts are the next P / N after rank r - 1's
    texts = [setup.texts[(i + offset) % len(setup.texts)] for i in range(len(setup.texts))]

    def noise(seed: int) -> torch.Tensor:
        return setup.noise(1, torch.Generator().manual_seed(seed))

    step_config = StepConfig(kind=setup.kind, form=setup.form, afs=policy.table.afs)
    rollout = denoiser_rollout(rl_model_for(setup, offset), noise, policy.sigmas, step_config, to_images)
    log, improved = open_log(setup, ranks), False
    loop = rl_tune(policy, rollout, rl_reward(setup), texts, local, grad_hook=ranks.hook)
    for stats, seconds in timed(loop):
        total = done + stats.iteration
        record(ranks, log, {"iteration": total, "mean_reward": stats.mean_reward, "loss": stats.loss, "kl": stats.kl,
                            "val_reward": stats.val_reward, "best_val_reward": stats.best_val_reward, "seconds": seconds})  # fmt: skip
        if not ranks.is_main:
            continue
        if total % setup.save_every == 0 or stats.iteration == local.iterations:
            save_policy(policy, setup.policy_path(), total)
        if stats.best_table.metadata.get("rl_iterations", 0) > 0 and stats.val_reward == stats.best_val_reward:
            save_table(stats.best_table.replace(metadata={**dict(stats.best_table.metadata), "rl_total_iterations": total,
                                                          "world_size": ranks.world, "headless": True}), setup.out)  # fmt: skip
            improved = True
        write(f"iter {total:5d}  reward {stats.mean_reward:.5f}  val {stats.val_reward}  best {stats.best_val_reward:.5f}  {seconds:.2f}s\n")  # fmt: skip
    if ranks.is_main and not improved and not (setup.resume and Path(setup.out).exists()):
        save_table(stats.best_table, setup.out)
    return Path(setup.out)
