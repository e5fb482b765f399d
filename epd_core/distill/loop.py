"""Stage 1 distillation loop (docs/training.md): learn an EPD table from a teacher.

A plain generator: it yields one DistillStats per iteration and never prints, so
the ComfyUI node can forward stats to its progress bar and the headless CLI to
stdout. Stop early by breaking out of the loop (or ``should_stop``); the best table
so far, by error on a fixed validation batch, is in every DistillStats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
import torch.utils.checkpoint

from ..params import EPDParams
from ..solver import StepConfig, advance, run_epd, table_rows
from .losses import LOSSES, state_loss
from .pool import TeacherPool, pool_order, pool_problems
from .teacher import TEACHERS, teacher_step, teacher_trajectory
from .trainable import TrainableTable

TARGETS = ("global", "local", "final")
NoiseFn = Callable[[int, torch.Generator], torch.Tensor]
GradHook = Callable[[list[torch.Tensor]], None]  # sees the trainable tensors, .grad set, before a step


class DistillConfig(NamedTuple):
    iterations: int = 100  # optimiser steps, one per noise batch
    batch: int = 16  # noise samples per iteration
    lr: float = 0.2  # Adam learning rate at the start (paper: 0.2)
    lr_min: float = 0.01  # cosine-annealed floor (paper: 0.01)
    teacher: str = "heun"  # a name in distill.teacher.TEACHERS
    inserted: int = 3  # M: teacher sub-steps inserted per student step
    targets: str = (
        "global"  # global: teacher from the same noise; local: teacher restarted per step; final: last state only
    )
    bptt: bool = False  # backpropagate through earlier steps (always on for "final")
    learn_scales: bool = True  # learn c and a when the table's scale ranges are > 0
    learn_sigmas: bool = False  # learn the grid's interior sigmas too (the end points stay)
    feature_weight: float = 0.0  # alpha on the final-state feature loss, when a feature function is given
    pool_batches: int = 0  # 0: fresh noise each iteration; P: keep the first P batches and revisit them (pool.py)
    eval_every: int = 10  # iterations between validation runs
    val_batch: int = 64  # fixed validation noise samples
    seed: int = 0  # noise seed (training uses seed, validation seed + 1)
    loss: str = "l2"  # l2: pointwise MSE to the teacher's states; mmd: patch MMD between the batches (losses.py)
    mmd_patch: int = 4  # loss="mmd": side of the square patches compared, in latent pixels
    checkpoint: bool = False  # recompute each student step in the backward pass: one step's activations held


class DistillStats(NamedTuple):
    iteration: int
    loss: float
    lr: float
    val_error: float | None  # validation_error's measure; None on iterations without validation
    best_val_error: float
    best_table: EPDParams


def check_config(
    config: DistillConfig, start: EPDParams, sigmas: torch.Tensor, pool: TeacherPool | None = None
) -> None:
    """Every bad setting at once, before any compute."""
    problems = []
    if config.pool_batches < 0:
        problems.append(f"pool_batches must be >= 0 (0 = no pool), got {config.pool_batches}")
    if config.pool_batches > 0 or pool is not None:
        problems.extend(pool_problems(pool, config, sigmas))
    if config.iterations < 1 or config.batch < 1 or config.val_batch < 1 or config.eval_every < 1:
        problems.append("iterations, batch, val_batch and eval_every must all be >= 1")
    if config.targets not in TARGETS:
        problems.append(f"targets={config.targets!r} is not one of {TARGETS}")
    if config.loss not in LOSSES:
        problems.append(f"loss={config.loss!r} is not one of {LOSSES} (l2: pointwise, mmd: patch distribution)")
    if config.mmd_patch < 1:
        problems.append(f"mmd_patch must be >= 1 latent pixel, got {config.mmd_patch}")
    if config.teacher not in TEACHERS:
        problems.append(f"teacher={config.teacher!r} is not one of {tuple(TEACHERS)}")
    if not 0 < config.lr_min <= config.lr:
        problems.append(f"need 0 < lr_min <= lr, got lr={config.lr}, lr_min={config.lr_min}")
    if config.learn_sigmas and start.num_steps < 2:
        problems.append("learn_sigmas needs at least 2 steps (a 1-step grid has no interior sigma to learn)")
    if start.num_steps != len(sigmas) - 1 or not torch.allclose(start.sigmas, sigmas.double().cpu()):
        problems.append(
            f"the starting table's grid ({start.num_steps} steps) differs from the requested grid ({len(sigmas) - 1} steps)"
        )
    if problems:
        raise ValueError("EPD distillation: " + "; ".join(problems))


def cosine_lr(config: DistillConfig, iteration: int) -> float:
    """Cosine learning rate from config.lr down to config.lr_min over config.iterations (closed form).

    Kept instead of torch.optim.lr_scheduler.CosineAnnealingLR (issue 15): the scheduler
    uses a recursive update whose values differ from this closed form by up to 1.7e-16
    (1261 of 1447 iterations over five lr/length settings, torch 2.14), which would change
    the trained tables' bits; and a pure function of the iteration keeps the loop
    stateless for resuming from a saved table.
    """
    return config.lr_min + 0.5 * (config.lr - config.lr_min) * (1 + math.cos(math.pi * iteration / config.iterations))


def student_losses(
    model, x_start, trainable, targets, config, step_config, extra_args
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Unroll the student from x_start; per-step MSE against targets (or the final one only)."""
    table = trainable.table()
    sigmas, rows, history, losses, x = table.sigmas, table_rows(table), [], [], x_start
    for n, row in enumerate(rows):
        x_in = x if (config.bptt or config.targets == "final") else x.detach()
        if config.targets == "local":
            target = teacher_step(model, x_in.detach(), float(sigmas[n]), float(sigmas[n + 1]),
                                  teacher=config.teacher, inserted=config.inserted, extra_args=extra_args)  # fmt: skip
        else:  # a final-only pool holds just the last state
            target = targets[n] if config.targets == "global" else targets[-1]
        x, history = student_step(model, x_in, n, sigmas, row, history, extra_args, step_config, config.checkpoint)
        if config.targets != "final" or n == len(rows) - 1:
            losses.append(state_loss(x, target, config.loss, config.mmd_patch))
    return losses, x


def student_step(model, x, n, sigmas, row, history, extra_args, step_config, recompute: bool):
    """One student step; with ``recompute`` its activations are dropped and recomputed in backward.

    The loop backpropagates once through the whole unrolled run, so autograd otherwise holds
    every step's model activations at once (global targets too: their per-step losses are
    summed before the single backward). Recomputing trades one extra forward per step for
    holding one step's activations, which is what an SDXL-size model needs on a consumer GPU.
    """
    if not recompute:
        x, _, history = advance(model, x, n, sigmas, row, history, extra_args, step_config)
        return x, history
    x, _, history = torch.utils.checkpoint.checkpoint(
        advance, model, x, n, sigmas, row, history, extra_args, step_config, use_reentrant=False
    )
    return x, history


def feature_loss(feature_fn, alpha: float, x: torch.Tensor, teacher_feats: torch.Tensor) -> torch.Tensor:
    """The final-step feature loss: alpha * MSE between the student's features and the teacher's."""
    return alpha * torch.mean((feature_fn(x) - teacher_feats) ** 2)


def validation_error(
    model, table: EPDParams, x_val, y_val, step_config: StepConfig, extra_args, features=None, config=None
) -> float:
    """How far the student's final state is from the teacher's on the validation batch.

    Without a feature loss: the mean L2 distance. With one (``features`` = (feature_fn, alpha,
    teacher features)): the final-state objective the student trains on, MSE + alpha * feature MSE,
    so the best table is picked by what was optimised, not by pixels alone. With
    ``config.loss == "mmd"``: the patch MMD of the final states, for the same reason.
    """
    with torch.no_grad():
        out = run_epd(model, x_val, table.sigmas, extra_args, params=table, kind=step_config.kind,
                      form=step_config.form, afs=step_config.afs, max_order=step_config.max_order)  # fmt: skip
        if config is not None and config.loss != "l2":
            return state_loss(out, y_val, config.loss, config.mmd_patch).item()
        if features is None:
            return (out - y_val).flatten(1).norm(dim=1).mean().item()
        feature_fn, alpha, y_feats = features
        return (torch.mean((out - y_val) ** 2) + feature_loss(feature_fn, alpha, out, y_feats)).item()


def training_batches(
    model, noise_fn, config, trainable, gen, teach, pool=None, feature_fn=None
) -> Iterator[tuple[torch.Tensor, list[torch.Tensor] | None, torch.Tensor | None]]:
    """Per iteration: the start noise, its teacher states (None for local targets without a
    feature loss) and the teacher's final features (None without a feature loss).

    Fresh noise runs the teacher on the student's current grid. With config.pool_batches = P the
    first P batches are kept (filled as they come, so progress and cancelling work from the
    start) and then revisited in a new order each epoch; a given ``pool`` is used from the
    start. A kept batch's features are computed once.
    """
    kept = list(zip(pool.noise, pool.targets)) if pool is not None else []
    size = len(kept) if pool is not None else config.pool_batches  # 0: fresh noise throughout
    order = pool_order(size, gen)  # a generator: it draws from gen only once the pool is full
    kept_features: dict[int, torch.Tensor] = {}
    while True:
        key = None  # which kept batch; None for noise that is used once
        if len(kept) < size or size == 0:
            x = noise_fn(config.batch, gen)
            needed = config.targets != "local" or feature_fn is not None
            targets = teacher_trajectory(model, x, trainable.grid().detach(), **teach) if needed else None
            if size:
                key = len(kept)
                kept.append((x, targets[-1:] if config.targets == "final" else targets))
        else:
            key = next(order)
            x, targets = kept[key]
        feats = kept_features.get(key) if feature_fn is not None else None
        if feature_fn is not None and feats is None:
            with torch.no_grad():  # the teacher's side is a constant target
                feats = feature_fn(targets[-1])
            if key is not None:
                kept_features[key] = feats
        yield x, targets, feats


def distill(
    model: Callable[..., torch.Tensor],
    start: EPDParams,
    noise_fn: NoiseFn,
    config: DistillConfig | None = None,
    *,
    step_config: StepConfig | None = None,
    extra_args: dict[str, Any] | None = None,
    feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    should_stop: Callable[[], bool] | None = None,
    pool: TeacherPool | None = None,
    grad_hook: GradHook | None = None,
) -> Iterator[DistillStats]:
    """Learn ``start``'s logits so the student matches the teacher (docs/training.md).

    noise_fn(batch, generator) -> x at sigmas[0]. The model stays frozen: gradients reach
    only the table, through the model's inputs. Deterministic for a fixed seed. ``pool``
    (pool.make_pool) reuses an earlier run's teacher targets, e.g. a refinement after a first stage.
    ``grad_hook(params)`` runs after the gradients are cleaned and before each optimiser step
    (epd_core.tune all-reduces them there); without it the loop is unchanged.
    """
    config = DistillConfig() if config is None else config
    step_config = StepConfig() if step_config is None else step_config
    sigmas = start.sigmas
    check_config(config, start, sigmas, pool)
    extra_args = {} if extra_args is None else extra_args
    teach = {"teacher": config.teacher, "inserted": config.inserted, "extra_args": extra_args}
    gen, val_gen = torch.Generator().manual_seed(config.seed), torch.Generator().manual_seed(config.seed + 1)
    x_val = noise_fn(config.val_batch, val_gen)
    y_val = teacher_trajectory(model, x_val, sigmas, **teach)[-1]
    use_features = feature_fn is not None and config.feature_weight > 0
    with torch.no_grad():
        val_features = (feature_fn, config.feature_weight, feature_fn(y_val)) if use_features else None
    trainable = TrainableTable(start, config.learn_scales, config.learn_sigmas)
    optimiser = torch.optim.Adam([p for p in trainable.parameters() if p.requires_grad], lr=config.lr)
    best_table = trainable.export()
    best = validation_error(model, best_table, x_val, y_val, step_config, extra_args, val_features, config)
    batches = training_batches(
        model, noise_fn, config, trainable, gen, teach, pool, feature_fn if use_features else None
    )
    for it in range(config.iterations):
        if should_stop is not None and should_stop():
            return
        lr = cosine_lr(config, it)
        for group in optimiser.param_groups:
            group["lr"] = lr
        x_start, targets, y_feats = next(batches)
        losses, x_end = student_losses(model, x_start, trainable, targets, config, step_config, extra_args)
        if use_features:
            losses.append(feature_loss(feature_fn, config.feature_weight, x_end, y_feats))
        loss = torch.stack(losses).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        for p in trainable.parameters():
            if p.grad is not None:
                p.grad.nan_to_num_(
                    nan=0.0, posinf=1e5, neginf=-1e5
                )  # as upstream: one bad batch must not poison the table
        if grad_hook is not None:
            grad_hook(optimiser.param_groups[0]["params"])
        optimiser.step()
        val = None
        if (it + 1) % config.eval_every == 0 or it + 1 == config.iterations:
            val = validation_error(
                model, trainable.export(), x_val, y_val, step_config, extra_args, val_features, config
            )
            if val < best:
                best, best_table = val, trainable.export()
        yield DistillStats(it + 1, loss.item(), lr, val, best, best_table)
