"""EPD Distill's run: start table, config, conditioning, the engine loop through the guider (issue 3).

Plain orchestration that the node calls; what touches ComfyUI is in ``nodes.comfy``. A
conditioning list becomes one batch with a prompt per row, so every iteration and the
validation batch cover all prompts. The best table is kept on disk as the loop goes.
"""

from __future__ import annotations

import logging
from typing import Any

from ...epd_core.distill import DistillConfig, distill
from ...epd_core.distill.pool import pool_problems
from ...epd_core.solver import StepConfig, prepare_sigmas
from ...epd_core.tables import default_table
from ..comfy import sampling, training
from ..errors import check_negatives

DISTILL_NODE = "EPD Distill"
log = logging.getLogger(__name__)
TEACHER_POOL = 4  # the node's default, also for API prompts that leave the optional input out


def student_start(model: Any, opts: dict[str, Any]) -> Any:
    """The starting table: the given one, or a default table on the chosen grid (sigma tail dropped)."""
    if opts.get("table") is not None:
        return opts["table"]
    grid = sampling.schedule_sigmas(model, opts["schedule"], opts["steps"], True, DISTILL_NODE)
    grid = prepare_sigmas(grid.double(), "drop")
    table = default_table(grid, opts["num_points"], form=opts["form"], afs=opts["afs"])
    scale = float(opts["scale_range"])
    return table.replace(scale_dir=scale, scale_time=scale) if scale > 0 else table


def distill_config(opts: dict[str, Any]) -> DistillConfig:
    return DistillConfig(
        iterations=opts["iterations"], batch=opts["batch"], lr=opts["lr"], lr_min=opts["lr_min"],
        teacher=opts["teacher"], inserted=opts["teacher_substeps"], targets=opts["targets"],
        bptt=opts["bptt"] or opts["targets"] == "final", learn_scales=opts["scale_range"] > 0,
        learn_sigmas=opts.get("learn_sigmas", False),
        feature_weight=opts.get("image_loss_weight", 1.0) if opts.get("vae") is not None else 0.0,
        eval_every=max(1, opts["iterations"] // 20), val_batch=max(opts["batch"], 8), seed=opts["seed"],
        pool_batches=opts.get("teacher_pool", TEACHER_POOL), loss=opts.get("loss", "l2"),
        checkpoint=opts.get("save_memory", False),
    )  # fmt: skip


def served_pool(config: DistillConfig) -> DistillConfig:
    """The config without its teacher pool where the pool cannot serve its targets (local targets, or
    global ones on a learned grid): fresh noise then, with a warning, rather than an error, because
    the pool is on by default and those targets are chosen by hand."""
    problems = pool_problems(None, config, None) if config.pool_batches else []
    if problems:
        log.warning("%s: teacher_pool %d not used, %s", DISTILL_NODE, config.pool_batches, "; ".join(problems))
        return config._replace(pool_batches=0)
    return config


def run_distill(model: Any, positive: list, negative: list, opts: dict[str, Any], node_id: str | None):
    """Build the start table and config, run the loop through the guider; returns (table, losses)."""
    start = student_start(model, opts)
    config = served_pool(distill_config(opts))
    check_negatives(positive, negative, DISTILL_NODE)
    pos = training.stack_conditioning(positive, DISTILL_NODE)
    neg = training.stack_conditioning(negative if len(negative) > 1 else negative * len(positive), DISTILL_NODE)
    rows = len(positive) * ((config.batch + len(positive) - 1) // len(positive))
    config = config._replace(batch=rows, val_batch=max(config.val_batch, rows))
    shape = training.latent_shape(model, rows, opts["width"], opts["height"])
    noise_fn = training.noise_fn_for(model, shape, float(start.sigmas[0]))
    kind = sampling.kind_of(model.get_model_object("model_sampling"))
    step_config = StepConfig(kind=kind, form=opts["form"], afs=start.afs)
    reporter = training.Reporter(config.iterations, node_id, "EPD_Distill")
    vae = opts.get("vae")
    features = training.decoded_images_fn(model, vae) if vae is not None else None
    losses: list[float] = []

    def describe(iterations: int, cancelled: bool) -> dict[str, Any]:
        return {"provenance": "distilled", "teacher": opts["teacher"], "teacher_substeps": opts["teacher_substeps"],
                "iterations": iterations, "final_loss": losses[-1] if losses else None, "guidance": opts["cfg"],
                "form": opts["form"], "kind": kind, "cancelled": cancelled, "targets": opts["targets"],
                "learn_sigmas": config.learn_sigmas, "image_loss_weight": config.feature_weight,
                "teacher_pool": config.pool_batches, "loss": config.loss}  # fmt: skip

    best = training.BestTable(DISTILL_NODE, node_id, start, describe)

    def loop(denoiser):
        if vae is not None:  # the decoded-image loss backpropagates through the frozen decoder too
            training.autograd_safe(vae.first_stage_model)
        for stats in distill(denoiser, start, noise_fn, config, step_config=step_config, feature_fn=features,
                             should_stop=reporter.should_stop):  # fmt: skip
            losses.append(stats.loss)
            best.offer(stats.best_table, stats.iteration)
            reporter.update(stats.iteration, loss=stats.loss, val=stats.best_val_error)

    with best.keep():
        training.run_in_guider(model, pos, neg, opts["cfg"], start.sigmas, shape, loop)
    return best.write(cancelled=False), losses
