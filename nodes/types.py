"""Custom ComfyUI types and shared input factories of the EPD nodes."""

from __future__ import annotations

from ..epd_core.vocab import (
    AUTO,
    DEFAULT_FORM_CHOICE,
    DEFAULT_TABLE_FORM,
    FORM_CHOICES,
    FORMS,
    MAX_POINTS,
    TAIL_CHOICES,
)
from .comfy.api import io
from .options import FORM_TOOLTIP, TABLE_FORM_TOOLTIP, TAIL_TOOLTIP

EPDTable = io.Custom("EPD_TABLE")
EPDReward = io.Custom("EPD_REWARD")
LossMap = io.Custom("LOSS_MAP")  # core's type: Plot Loss Graph draws it
EPDStartModel = io.Custom("EPD_START_MODEL")  # a fitted distribution of noised latents at sigma*
EPDScales = io.Custom("EPD_SCALES")  # a scale-wise schedule: one latent size per step


def table_input(tooltip: str, optional: bool = True) -> io.Input:
    """An EPD_TABLE input."""
    return EPDTable.Input("table", optional=optional, tooltip=tooltip)


def table_output() -> io.Output:
    """The EPD_TABLE output of the table nodes."""
    return EPDTable.Output(
        display_name="table", tooltip="An EPD table: per-step positions r, weights lam, scales and its sigma grid."
    )


def form_input(for_table: bool = False) -> io.Input:
    """The step-form combo: auto | direction | data on the sampler, direction | data on a table."""
    if for_table:
        return io.Combo.Input("form", options=list(FORMS), default=DEFAULT_TABLE_FORM, tooltip=TABLE_FORM_TOOLTIP)
    return io.Combo.Input("form", options=list(FORM_CHOICES), default=DEFAULT_FORM_CHOICE, tooltip=FORM_TOOLTIP)


def tail_input() -> io.Input:
    """The sigma-tail combo (auto | drop | stop | keep)."""
    return io.Combo.Input("tail", options=list(TAIL_CHOICES), default=AUTO, tooltip=TAIL_TOOLTIP, advanced=True)


K_TOOLTIP = "K, the number of intermediate points evaluated in parallel per step (one batched model call)."


def num_points_input(with_table: bool = True) -> io.Input:
    """K, the number of parallel points per step."""
    note = " Used only when no table is connected; a table brings its own K." if with_table else ""
    return io.Int.Input("num_points", default=2, min=1, max=MAX_POINTS, tooltip=K_TOOLTIP + note)


def overwrite_input() -> io.Input:
    """Whether a save may replace an existing file."""
    return io.Boolean.Input(
        "overwrite",
        default=False,
        tooltip="Replace an existing file of the same name instead of stopping with an error.",
    )


# --- inputs shared by the training nodes -------------------------------------------------------


def conditioning_inputs(positive_tooltip: str) -> list[io.Input]:
    """Positive and negative CONDITIONING of a training node (lists: one prompt per row or group)."""
    return [
        io.Conditioning.Input("positive", tooltip=positive_tooltip),
        io.Conditioning.Input("negative", tooltip="Negative prompt(s): one, or one per positive prompt."),
    ]


def cfg_input(tooltip: str) -> io.Input:
    """The guidance scale a table is trained at."""
    return io.Float.Input("cfg", default=7.5, min=0.0, max=30.0, step=0.1, tooltip=tooltip)


def size_inputs(what: str) -> list[io.Input]:
    """Width and height in pixels, multiples of 8."""
    return [
        io.Int.Input(side, default=512, min=16, max=4096, step=8, tooltip=f"{what} {side}.")
        for side in ("width", "height")
    ]


def iterations_input(default: int, tooltip: str) -> io.Input:
    """Optimiser steps of a training node."""
    return io.Int.Input("iterations", default=default, min=1, max=100000, tooltip=tooltip)


def lr_input(name: str, default: float, low: float, high: float, step: float, tooltip: str) -> io.Input:
    """An Adam learning rate (advanced)."""
    return io.Float.Input(name, default=default, min=low, max=high, step=step, tooltip=tooltip, advanced=True)


def seed_input(tooltip: str) -> io.Input:
    """The seed that makes a training run deterministic."""
    return io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip=tooltip)
