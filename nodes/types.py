"""Custom ComfyUI types and shared input factories of the EPD nodes (style.md §4)."""

from __future__ import annotations

from .comfy.api import io
from .options import (
    DEFAULT_FORM,
    DEFAULT_TABLE_FORM,
    FORM_TOOLTIP,
    FORMS,
    TABLE_FORM_TOOLTIP,
    TABLE_FORMS,
    TAIL_TOOLTIP,
    TAILS,
)

EPDTable = io.Custom("EPD_TABLE")
EPDReward = io.Custom("EPD_REWARD")
LossMap = io.Custom("LOSS_MAP")  # core's type: Plot Loss Graph draws it


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
        return io.Combo.Input("form", options=list(TABLE_FORMS), default=DEFAULT_TABLE_FORM, tooltip=TABLE_FORM_TOOLTIP)
    return io.Combo.Input("form", options=list(FORMS), default=DEFAULT_FORM, tooltip=FORM_TOOLTIP)


def tail_input() -> io.Input:
    """The sigma-tail combo (auto | drop | stop | keep)."""
    return io.Combo.Input("tail", options=list(TAILS), default="auto", tooltip=TAIL_TOOLTIP, advanced=True)


K_TOOLTIP = "K, the number of intermediate points evaluated in parallel per step (one batched model call)."


def num_points_input(with_table: bool = True) -> io.Input:
    """K, the number of parallel points per step."""
    note = " Used only when no table is connected; a table brings its own K." if with_table else ""
    return io.Int.Input("num_points", default=2, min=1, max=8, tooltip=K_TOOLTIP + note)


def overwrite_input() -> io.Input:
    """Whether a save may replace an existing file."""
    return io.Boolean.Input(
        "overwrite",
        default=False,
        tooltip="Replace an existing file of the same name instead of stopping with an error.",
    )
