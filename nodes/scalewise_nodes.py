"""Scale-wise nodes (SwD, issue 16 C): EPD Scale-wise Schedule (scales + SIGMAS) and EPD Scale-wise Sampler."""

from __future__ import annotations

from typing import Any

from ..epd_core.scalewise import PRESET_CHOICES, UPSCALE_MODES
from ..epd_core.scalewise.schedule import describe
from .comfy import scalewise
from .comfy.api import io
from .errors import node_errors
from .options import CATEGORY
from .types import EPDScales

SCALES_TOOLTIP = "The scale-wise schedule from EPD Scale-wise Schedule: one latent size per step, smallest first."
LATENT_NOTE = ("Feed SamplerCustom / SamplerCustomAdvanced a latent at the FINAL size (EmptyLatentImage or "
               "EmptySD3LatentImage at the schedule's width and height); the sampler starts from its noise "
               "subsampled to the first scale.")  # fmt: skip


def schedule_inputs() -> list[io.Input]:
    """Inputs of EPD Scale-wise Schedule."""
    side = "Final image {} in pixels; the latent is this divided by the VAE factor (8). " + LATENT_NOTE
    return [
        io.Model.Input("model", tooltip="The model: its sigma space (flow or eps/v), patch size and VAE factor."),
        io.Combo.Input("preset", options=list(PRESET_CHOICES), default="sd35_medium_6steps",
                       tooltip="SwD's published schedules (yandex-research/swd), made for their LoRAs: SD3.5 "
                       "Medium / Large 4 and 6 steps, FLUX.1-dev 4 steps (flow sigmas), SDXL 4 steps (DDPM "
                       "timesteps / 1000, mapped to this model's sigmas). custom: custom_scales and custom_sigmas."),
        io.Int.Input("width", default=1024, min=16, max=16384, step=8, tooltip=side.format("width")),
        io.Int.Input("height", default=1024, min=16, max=16384, step=8, tooltip=side.format("height")),
        io.Int.Input("patch", default=0, min=0, max=16, advanced=True,
                     tooltip="Round every scale up to a multiple of this many latent pixels. 0: the model's own "
                     "patch size (2 for SD3 / Flux DiTs, 1 for UNets)."),
        io.String.Input("custom_scales", default="0.5, 0.625, 0.75, 1", advanced=True,
                        tooltip="preset=custom: one scale per step, smallest first, as factors of the final size "
                        "(0.5 = half the width and height) or as latent sides such as SwD's '64, 80, 96, 128'. "
                        "Non-square images get the same factor on both sides."),
        io.String.Input("custom_sigmas", default="1.0, 0.8959, 0.7371, 0.6022, 0", advanced=True,
                        tooltip="preset=custom: the model's own sigmas, decreasing, one more than custom_scales "
                        "(the last one usually 0). Flow models (SD3, Flux) use 0..1; eps models up to sigma_max."),
    ]  # fmt: skip


class EPDScalewiseSchedule(io.ComfyNode):
    """EPD_SCALES and SIGMAS of a scale-wise (SwD) schedule for a given final width and height."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_ScalewiseSchedule",
            display_name="EPD Scale-wise Schedule",
            category=CATEGORY,
            description="Scale-wise schedule (SwD, Starodubcev et al. 2025): the latent size of every step and its "
            "SIGMAS, from a published preset or your own list, for any width and height (non-square sides get the "
            "same factor, rounded up to the model's patch size). Connect scales to EPD Scale-wise Sampler and "
            "sigmas to the sampler node.",
            inputs=schedule_inputs(),
            outputs=[
                EPDScales.Output(display_name="scales", tooltip=SCALES_TOOLTIP),
                io.Sigmas.Output(display_name="sigmas", tooltip="One sigma per step plus the final one (0)."),
                io.String.Output(display_name="info", tooltip="The latent sizes, step by step."),
            ],
        )

    @classmethod
    def execute(cls, model: Any, preset: str, width: int, height: int, patch: int = 0,
                custom_scales: str = "", custom_sigmas: str = "") -> io.NodeOutput:  # fmt: skip
        with node_errors("EPD Scale-wise Schedule"):
            scales, sigmas = scalewise.schedule(model, preset, width, height, patch, custom_scales, custom_sigmas)
        return io.NodeOutput(scales, sigmas, describe(scales.sizes))


class EPDScalewiseSampler(io.ComfyNode):
    """SAMPLER for SamplerCustom / SamplerCustomAdvanced: denoise, resize x0, re-noise at the next scale."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_ScalewiseSampler",
            display_name="EPD Scale-wise Sampler",
            category=CATEGORY,
            description="Scale-wise sampling (SwD): every step denoises at its scale, resizes the x0 prediction to "
            "the next scale and re-noises it with the model's own noise scaling (right for flow models, which "
            "SamplerLCMUpscale is not). Made for SwD-distilled models (their LoRAs); on a plain model it is a "
            "few-step LCM-style sampler and loses detail. " + LATENT_NOTE,
            inputs=[
                EPDScales.Input("scales", tooltip=SCALES_TOOLTIP),
                io.Combo.Input("upscale", options=list(UPSCALE_MODES), default="bicubic",
                               tooltip="How the x0 prediction is resized between scales: bicubic (SwD's choice), "
                               "bilinear, nearest-exact or area."),
            ],
            outputs=[io.Sampler.Output()],
        )  # fmt: skip

    @classmethod
    def execute(cls, scales: Any, upscale: str = "bicubic") -> io.NodeOutput:
        return io.NodeOutput(scalewise.make_scalewise_sampler(scales, upscale))
