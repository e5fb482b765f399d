"""EPD RL Tune: tune an EPD table with a preference reward, RDPO (docs/training.md).

The schema; the run is nodes.train.rl (the engine's RDPO loop, rollouts through the user's
model and VAE). Only the small Dirichlet policy is trained; the backbone never is.
"""

from __future__ import annotations

import torch

from ..epd_core.rl.objective import GROUPINGS
from ..epd_core.vocab import FORM_CHOICES
from .comfy.api import io
from .errors import node_errors
from .options import CATEGORY
from .train.rl import RL_NODE, run_rl
from .types import (
    EPDReward,
    LossMap,
    cfg_input,
    conditioning_inputs,
    iterations_input,
    lr_input,
    seed_input,
    size_inputs,
    table_input,
    table_output,
)


def rl_inputs() -> list[io.Input]:
    """Inputs of EPD RL Tune; every one arrives as a list (is_input_list)."""
    adv = {"advanced": True}
    return [
        io.Model.Input("model", tooltip="The model to tune the table for; it is never trained."),
        io.Vae.Input("vae", tooltip="Decodes the rollouts to images for the reward."),
        *conditioning_inputs("Prompts: a list gives one prompt per group of images."),
        EPDReward.Input("reward", tooltip="What to maximise: an EPD reward node (or EPD Reward Mix)."),
        table_input("The starting table (a distilled one works best); the policy starts exactly at it.", False),
        io.String.Input(
            "prompt_texts",
            default="",
            multiline=True,
            tooltip="The prompt texts, one per line in the order of the positives, for text-aware "
            "rewards (PickScore, CLIP). Leave empty for image-only rewards.",
        ),
        cfg_input("Guidance scale of the rollouts."),
        *size_inputs("Rollout image"),
        io.Combo.Input(
            "form", options=list(FORM_CHOICES), default="auto", tooltip="Step form (auto: the table's own)."
        ),
        iterations_input(50, "Policy updates (one rollout batch each)."),
        io.Int.Input("prompts_per_step", default=2, min=1, max=64, tooltip="Prompts per rollout batch."),
        io.Int.Input(
            "group_size",
            default=4,
            min=2,
            max=64,
            tooltip="Images per prompt, each with its own table and noise; rewards are compared within a group.",
        ),
        io.Float.Input(
            "concentration",
            default=20.0,
            min=0.5,
            max=10000.0,
            step=0.5,
            tooltip="Dirichlet kappa: how far rollout tables stray from the mean (larger = closer).",
        ),
        lr_input("lr", 3e-3, 1e-6, 1.0, 1e-4, "Adam learning rate."),
        io.Float.Input(
            "kl_coef",
            default=0.01,
            min=0.0,
            max=10.0,
            step=0.001,
            tooltip="KL penalty to the starting table; guards against reward hacking (0 = off).",
            **adv,
        ),
        io.Float.Input(
            "clip_range",
            default=0.2,
            min=0.01,
            max=1.0,
            step=0.01,
            tooltip="PPO ratio clip: how far one update may move the probability of a table.",
            **adv,
        ),
        io.Boolean.Input("learn_scales", default=False, tooltip="Also tune the direction/time scales.", **adv),
        io.Combo.Input(
            "grouping",
            options=list(GROUPINGS),
            default="prompt",
            tooltip="prompt: baseline from images of the same prompt; mixed: upstream's mixed-prompt groups.",
            **adv,
        ),
        io.Int.Input(
            "eval_every",
            default=5,
            min=1,
            max=10000,
            tooltip="Iterations between scoring the mean table on fixed seeds (keeps the best; preview).",
        ),
        io.Int.Input("eval_per_prompt", default=2, min=1, max=64, tooltip="Validation images per prompt.", **adv),
        seed_input("Seed of the policy, the tables and the noise."),
        io.String.Input(
            "policy_file",
            default="",
            optional=True,
            tooltip="Name in models/epd_rl to save the policy state to at every validation (empty = no file).",
        ),
        io.Boolean.Input("resume", default=False, optional=True, tooltip="Continue from policy_file when it exists."),
        io.Boolean.Input(
            "overwrite_policy",
            default=False,
            optional=True,
            advanced=True,
            tooltip="Let a new run (resume off) replace an existing policy_file; off: stop before training.",
        ),
    ]


class EPDRLTune(io.ComfyNode):
    """EPD RL Tune -> EPD_TABLE, LOSS_MAP (rewards), IMAGE (issue 4)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_RLTune",
            display_name=RL_NODE,
            category=CATEGORY,
            description="Tune an EPD table with a reward (RDPO): tables are drawn from a Dirichlet policy around "
            "the start, scored, and the policy learns from the comparison. The model is never trained. "
            "The best mean table so far is kept in models/epd/autosave (at the start, at every new best and on "
            "Cancel); Cancel then stops the prompt, so load the autosaved table to use it.",
            inputs=rl_inputs(),
            outputs=[
                table_output(),
                LossMap.Output(display_name="rewards", tooltip="Mean reward per iteration, for Plot Loss Graph."),
                io.Image.Output(display_name="preview", tooltip="The last validation images of the mean table."),
            ],
            hidden=[io.Hidden.unique_id],
            is_input_list=True,
            is_experimental=True,
        )

    @classmethod
    def execute(cls, model: list, vae: list, positive: list, negative: list, **lists: list) -> io.NodeOutput:
        opts = {k: v[0] for k, v in lists.items()}
        with node_errors(RL_NODE):
            reward, table = opts.pop("reward"), opts.pop("table")
            best, rewards, preview = run_rl(model[0], vae[0], positive, negative, reward, table, opts,
                                            getattr(cls.hidden, "unique_id", None))  # fmt: skip
        images = preview if preview is not None else torch.zeros(1, 8, 8, 3)
        return io.NodeOutput(best, {"loss": rewards}, images)
