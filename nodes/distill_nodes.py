"""EPD Distill: learn an EPD table from a teacher on the user's own model (docs/training.md).

The schema; the run is nodes.train.distill (the engine's loop through a real CFGGuider).
"""

from __future__ import annotations

import logging

from ..epd_core.distill import TEACHERS
from ..epd_core.distill.loop import TARGETS
from ..epd_core.distill.losses import LOSSES
from ..epd_core.vocab import SCHEDULE_CHOICES
from .comfy.api import io
from .errors import node_errors
from .options import CATEGORY
from .train.distill import DISTILL_NODE, TEACHER_POOL, run_distill
from .types import (
    LossMap,
    cfg_input,
    conditioning_inputs,
    form_input,
    iterations_input,
    lr_input,
    num_points_input,
    seed_input,
    size_inputs,
    table_input,
    table_output,
)

log = logging.getLogger(__name__)


def distill_inputs() -> list[io.Input]:
    """Inputs of EPD Distill; every one arrives as a list (is_input_list)."""
    adv = {"advanced": True}
    return [
        io.Model.Input("model", tooltip="The model to distil the table for; it stays frozen."),
        *conditioning_inputs("Prompts to learn across; a list gives one prompt per sample row."),
        cfg_input("Guidance scale; a table is specific to it."),
        *size_inputs("The table is learned at this image"),
        io.Int.Input("batch", default=4, min=1, max=64, tooltip="Noise samples per iteration."),
        io.Int.Input(
            "steps",
            default=5,
            min=1,
            max=50,
            tooltip="Student EPD steps (2 model rounds each, 1 on an AFS first step).",
        ),
        num_points_input(),
        form_input(for_table=True),
        io.Combo.Input(
            "schedule",
            options=list(SCHEDULE_CHOICES),
            default="auto",
            tooltip="Student grid (ends in 0). auto: EPD Sigmas' grid for the model family (flow_uniform on SD3/Flux, "
            "polynomial otherwise), which kept the worst distilled table per family at 1.40x the best built-in "
            "against 1.94x for time_uniform.",
        ),
        io.Combo.Input("teacher", options=list(TEACHERS), default="dpm_2", tooltip="High-accuracy teacher solver."),
        io.Int.Input(
            "teacher_substeps",
            default=4,
            min=1,
            max=100,
            tooltip="M: teacher steps inserted per student step. 4 learned as good a table as 15 on the measured "
            "models, at a third of the teacher's cost.",
        ),
        iterations_input(40, "Optimiser steps (one noise batch each; with a teacher pool, a pooled batch)."),
        lr_input("lr", 0.2, 1e-5, 10.0, 0.01, "Adam learning rate, cosine-decayed to lr_min."),
        lr_input("lr_min", 0.01, 1e-6, 10.0, 0.001, "Final learning rate."),
        io.Combo.Input(
            "targets",
            options=list(TARGETS),
            default="final",
            tooltip="final: match the teacher's last state only, backpropagating through every step (the default: "
            "with the teacher pool and learned sigmas it learned the best tables measured); global: the teacher's "
            "state after every step from the same noise; local: teacher restarted from the student's state (set "
            "teacher_pool to 0).",
            **adv,
        ),
        io.Boolean.Input("bptt", default=False, tooltip="Backpropagate through all steps (more memory).", **adv),
        io.Float.Input(
            "scale_range",
            default=0.35,
            min=0.0,
            max=0.5,
            step=0.01,
            tooltip="Learned direction/time scales stay within 1 +/- this (0 = off). 0.35 learned the best tables "
            "measured (0.05, 0.2, 0.35, 0.5 tried on three model families).",
            **adv,
        ),
        io.Boolean.Input(
            "learn_sigmas",
            default=True,
            tooltip="Also learn the grid's interior sigmas (end points stay). Sample with EPD Sigmas fed this "
            "table, so the sampler uses the learned grid.",
            **adv,
        ),
        io.Boolean.Input("afs", default=True, tooltip="Analytical first step: saves one model round from pure noise."),
        seed_input("Noise seed; the result is deterministic for a seed."),
        table_input("Optional starting table (its grid and K are used; steps/schedule are then ignored)."),
        io.Vae.Input(
            "vae",
            optional=True,
            tooltip="Optional: add a loss on the decoded final image (student vs teacher). Backpropagates "
            "through the VAE decoder, so it costs memory; leave empty for the latent loss alone.",
        ),
        io.Float.Input(
            "image_loss_weight",
            default=1.0,
            min=0.0,
            max=1000.0,
            step=0.1,
            tooltip="Weight of the decoded-image loss (pixels in 0-1) next to the latent loss; used only with a VAE.",
            **adv,
        ),
        io.Int.Input(
            "teacher_pool",
            default=TEACHER_POOL,
            min=0,
            max=10000,
            optional=True,
            tooltip="N: train on N fixed noise batches whose teacher runs once, revisited in a new order each pass: "
            "far faster when iterations exceed N. 0: fresh noise every iteration. Not used (fresh noise, with a "
            "warning in the log) with local targets or with global targets and learn_sigmas.",
            **adv,
        ),
        io.Combo.Input(
            "loss",
            options=list(LOSSES),
            default="l2",
            optional=True,
            tooltip="l2: each student sample matches the teacher's sample from the same noise (pointwise). "
            "mmd: the set of 4x4 latent patches of the student's batch matches the teacher's set (SwD's patch "
            "MMD), a distribution match that does not pair samples.",
            **adv,
        ),
        io.Boolean.Input(
            "save_memory",
            default=False,
            optional=True,
            tooltip="Recompute each student step's model calls in the backward pass: holds one step's activations "
            "instead of every step's, for one more forward per step (1.0-1.4x the time per iteration measured). Turn "
            "on when a large model (SDXL, SD3, Flux) runs out of memory here.",
            **adv,
        ),
    ]


class EPDDistill(io.ComfyNode):
    """EPD Distill -> EPD_TABLE, LOSS_MAP (issue 3)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_Distill",
            display_name=DISTILL_NODE,
            category=CATEGORY,
            description="Learn an EPD table (positions, weights, scales) from a high-accuracy teacher on your own model. "
            "The model is never trained. The best table so far is kept in models/epd/autosave (at the start, at "
            "every new best and on Cancel); Cancel then stops the prompt, so load the autosaved table to use it.",
            inputs=distill_inputs(),
            outputs=[table_output(), LossMap.Output(display_name="loss", tooltip="For Plot Loss Graph.")],
            hidden=[io.Hidden.unique_id],
            is_input_list=True,
            is_experimental=True,
        )

    @classmethod
    def execute(cls, model: list, positive: list, negative: list, **lists: list) -> io.NodeOutput:
        opts = {k: v[0] for k, v in lists.items()}
        with node_errors(DISTILL_NODE):
            table, losses = run_distill(model[0], positive, negative, opts, getattr(cls.hidden, "unique_id", None))
        return io.NodeOutput(table, {"loss": losses})
