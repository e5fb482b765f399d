"""EPD Sampler (SAMPLER) and EPD Sigmas (SIGMAS)."""

from __future__ import annotations

from typing import Any

from ..epd_core.vocab import AFS_CHOICES, AUTO, DEFAULT_FORM_CHOICE, PARALLEL_CHOICES, PLUGIN_CHOICES, SCHEDULE_CHOICES
from .comfy import sampling
from .comfy.api import io
from .options import CATEGORY
from .types import form_input, num_points_input, table_input, tail_input


def sampler_inputs() -> list[io.Input]:
    """Inputs of EPD Sampler."""
    return [
        table_input(
            "Optional EPD table (learned, loaded or default). Its step count must match the sigmas: "
            "feed the sigmas from EPD Sigmas with the same table."
        ),
        num_points_input(),
        io.Combo.Input(
            "plugin",
            options=list(PLUGIN_CHOICES),
            default=AUTO,
            tooltip="EPD-Plugin: jump to the K points with iPNDM's Adams-Bashforth extrapolation of past slopes "
            "instead of an Euler jump. auto: as a connected table was made; without a table, on for SD1.5/SDXL/EDM "
            "models and off for SD3/Flux (flow) models, as measured per model family.",
        ),
        io.Int.Input(
            "max_order",
            default=3,
            min=1,
            max=4,
            advanced=True,
            tooltip="Highest Adams-Bashforth order of the plugin (1 = plain EPD jump). Used only when the plugin runs.",
        ),
        form_input(),
        io.Combo.Input(
            "parallel",
            options=list(PARALLEL_CHOICES),
            default="auto",
            advanced=True,
            tooltip="batched: the K points in one K*batch model call. sequential: one call per point (less memory). "
            "auto: batched unless an inpainting mask that cannot be tiled or context windows prevent it.",
        ),
        io.Int.Input(
            "chunk_size",
            default=0,
            min=0,
            max=64,
            advanced=True,
            tooltip="At most this many points per batched call (0 = all K at once); lowers peak memory.",
        ),
        io.Combo.Input(
            "afs",
            options=list(AFS_CHOICES),
            default="auto",
            tooltip="Analytical first step: skip the first model call at pure noise. auto: as the table says (on "
            "without a table). Never used when the sigmas start below the model's sigma_max (img2img, denoise < 1).",
        ),
        tail_input(),
    ]


def plugin_problem(plugin: str | bool) -> str | None:
    """Why a plugin value is refused; None for a choice or the true/false of a workflow saved with the old checkbox.

    Declaring validate_inputs(plugin) makes ComfyUI skip its own menu check for this input, so old workflows load.
    """
    if isinstance(plugin, bool) or plugin in PLUGIN_CHOICES:
        return None
    return f"plugin must be one of {list(PLUGIN_CHOICES)}, got {plugin!r}; pick one in EPD Sampler's plugin menu."


class EPDSampler(io.ComfyNode):
    """SAMPLER for SamplerCustom / SamplerCustomAdvanced running EPD-Solver or EPD-Plugin."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_Sampler",
            display_name="EPD Sampler",
            category=CATEGORY,
            description="Ensemble Parallel Direction solver: per step, K intermediate points evaluated in one "
            "batched model call. Without a table it uses the training-free default table (Gauss-Legendre for the "
            "direction form, uniform for the data form).",
            inputs=sampler_inputs(),
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def validate_inputs(cls, plugin: str | bool = AUTO) -> bool | str:
        return plugin_problem(plugin) or True

    @classmethod
    def execute(
        cls,
        num_points: int = 2,
        plugin: str | bool = AUTO,
        max_order: int = 3,
        form: str = DEFAULT_FORM_CHOICE,
        parallel: str = "auto",
        chunk_size: int = 0,
        afs: str = "auto",
        tail: str = "drop",
        table: Any = None,
    ) -> io.NodeOutput:
        options = {"params": table, "num_points": num_points, "form": form, "parallel": parallel, "afs": afs}
        options |= {"plugin": plugin, "max_order": max_order, "chunk_size": chunk_size, "tail": tail}
        return io.NodeOutput(sampling.make_sampler(**options))


def sigmas_inputs() -> list[io.Input]:
    """Inputs of EPD Sigmas."""
    return [
        io.Model.Input(
            "model", tooltip="The model to sample; gives the sigma range, the flow shift and the family check."
        ),
        io.Int.Input(
            "steps",
            default=8,
            min=1,
            max=200,
            tooltip="Solver steps of the default grid; each costs 1 + K model evaluations (the K in one batch). "
            "Ignored when a table is connected: a table brings its own grid.",
        ),
        io.Combo.Input(
            "schedule",
            options=list(SCHEDULE_CHOICES),
            default="auto",
            tooltip="Default grid. auto: flow_uniform (uniform in time with the model's shift, like ComfyUI's "
            "simple) for SD3/Flux, polynomial (karras, rho 7, over the model's sigma range) for every other model; "
            "both measured best for EPD per family. flowmatch is diffusers' SD3/Flux grid, whose last step is tiny. "
            "Ignored when a table is connected.",
        ),
        io.Boolean.Input(
            "end_at_zero",
            default=True,
            advanced=True,
            tooltip="Append sigma = 0 to the default grid, as ComfyUI schedulers do; EPD Sampler's tail setting "
            "then decides how the end is handled.",
        ),
        table_input("Optional EPD table: its own grid is returned, after checking that the table fits the model."),
    ]


class EPDSigmas(io.ComfyNode):
    """SIGMAS for EPD: a table's own grid, or a default grid from the model's sigma range."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_Sigmas",
            display_name="EPD Sigmas",
            category=CATEGORY,
            description="The sigma grid for EPD Sampler: a connected table's own grid (checked against the model), "
            "or an EPD schedule built from the model's sigma range.",
            inputs=sigmas_inputs(),
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(
        cls, model: Any, steps: int = 8, schedule: str = "auto", end_at_zero: bool = True, table: Any = None
    ) -> io.NodeOutput:
        if table is not None:
            return io.NodeOutput(sampling.table_sigmas(model, table, "EPD Sigmas"))
        return io.NodeOutput(sampling.schedule_sigmas(model, schedule, steps, end_at_zero, "EPD Sigmas"))
