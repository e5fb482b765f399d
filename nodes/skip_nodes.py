"""Skip-the-middle nodes (issue 16 B): fit a start distribution at sigma*, sample it, truncate SIGMAS, suggest sigma*."""

from __future__ import annotations

from typing import Any

from ..epd_core.skip import FAMILIES
from .comfy import skip
from .comfy.api import io
from .options import CATEGORY
from .types import EPDStartModel

MODEL_TOOLTIP = "The diffusion model: its latent format, prediction kind (eps or flow) and sigma range."
LATENTS_TOOLTIP = ("Clean reference latents: VAE-encoded images, or the model's own finished samples (a KSampler's "
                   "output). At least 2; a full Gaussian needs more latents than latent dimensions.")  # fmt: skip
START_TOOLTIP = "The fitted start distribution from EPD Fit Start Distribution (it carries sigma*)."


FAMILY_TOOLTIP = ("gaussian: full covariance (needs more latents than dimensions); diagonal: per-element variance; "
                  "lowrank: top-rank principal directions plus a floor; gmm: diagonal Gaussian mixture fitted by EM; "
                  "normalizing_flow: a small coupling flow on the top-rank principal directions, trained on noised "
                  "latents for flow_steps Adam steps (seconds), a floor on the rest.")  # fmt: skip


def fit_inputs() -> list:
    """EPD Fit Start Distribution's inputs; new ones are appended (saved workflows keep their widget order)."""
    return [
        io.Model.Input("model", tooltip=MODEL_TOOLTIP),
        io.Latent.Input("latents", tooltip=LATENTS_TOOLTIP),
        io.Float.Input("sigma_star", default=1.0, min=0.0001, max=1000.0, step=0.001,
                       tooltip="sigma* on the model's own scale (0..1 for flow models). Sampling starts "
                       "here; EPD Suggest Sigma* proposes one."),
        io.Combo.Input("family", options=list(FAMILIES), default="diagonal", tooltip=FAMILY_TOOLTIP),
        io.Int.Input("rank", default=8, min=1, max=1024, advanced=True,
                     tooltip="lowrank: directions kept; normalizing_flow: principal directions the flow models "
                     "(at least 2, at most the latent count - 1)."),
        io.Int.Input("components", default=4, min=1, max=64, advanced=True, tooltip="gmm: components."),
        io.Int.Input("seed", default=0, min=0, max=2**31 - 1, advanced=True,
                     tooltip="gmm: EM seeding; normalizing_flow: initialisation, minibatches and noise."),
        io.Int.Input("flow_steps", default=300, min=10, max=20000, advanced=True, optional=True,
                     tooltip="normalizing_flow: Adam steps of 256 noised latents each."),
    ]  # fmt: skip


class EPDFitStart(io.ComfyNode):
    """EPD_START_MODEL: a Gaussian, low-rank, GMM or small-flow model of the data, noised at sigma*."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_FitStart",
            display_name="EPD Fit Start Distribution",
            category=CATEGORY,
            description="Skip the middle (Fassina et al. 2026): fit a light model of the data to reference latents "
            "and add the noise of sigma* (in closed form, or by training a small normalizing flow on noised "
            "latents), so sampling can start at sigma* instead of sigma_max.",
            inputs=fit_inputs(),
            outputs=[EPDStartModel.Output(display_name="start_model", tooltip=START_TOOLTIP)],
        )

    @classmethod
    def execute(cls, model: Any, latents: dict, sigma_star: float, family: str = "diagonal", rank: int = 8,
                components: int = 4, seed: int = 0, flow_steps: int = 300) -> io.NodeOutput:  # fmt: skip
        fitted = skip.fit(model, latents, sigma_star, family, rank=rank, components=components, seed=seed,
                          steps=flow_steps)  # fmt: skip
        return io.NodeOutput(fitted)


class EPDSampleStart(io.ComfyNode):
    """LATENT at sigma*: use it with DisableNoise and EPD Truncate Sigmas in SamplerCustomAdvanced."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_SampleStart",
            display_name="EPD Sample Start Latent",
            category=CATEGORY,
            description="Draws start latents at sigma* from a fitted start distribution. Feed SamplerCustomAdvanced "
            "with noise OFF (DisableNoise) and the SIGMAS of EPD Truncate Sigmas; flow models are scaled so the "
            "start is not shrunk by (1 - sigma*).",
            inputs=[
                io.Model.Input("model", tooltip=MODEL_TOOLTIP),
                EPDStartModel.Input("start_model", tooltip=START_TOOLTIP),
                io.Int.Input("batch_size", default=1, min=1, max=4096, tooltip="How many start latents."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="Seed of the draw."),
            ],
            outputs=[io.Latent.Output()],
        )  # fmt: skip

    @classmethod
    def execute(cls, model: Any, start_model: Any, batch_size: int = 1, seed: int = 0) -> io.NodeOutput:
        return io.NodeOutput(skip.start_latent(model, start_model, batch_size, seed))


class EPDTruncateSigmas(io.ComfyNode):
    """SIGMAS that start at the start model's sigma*."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_TruncateSigmas",
            display_name="EPD Truncate Sigmas",
            category=CATEGORY,
            description="Drops every sigma at or above sigma* and puts sigma* first, so the sampler starts where "
            "EPD Sample Start Latent's latents live. For fewer model calls, make a short schedule instead.",
            inputs=[
                io.Sigmas.Input("sigmas", tooltip="A full schedule, e.g. from BasicScheduler."),
                EPDStartModel.Input("start_model", tooltip=START_TOOLTIP),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, sigmas: Any, start_model: Any) -> io.NodeOutput:
        return io.NodeOutput(skip.truncated(sigmas, start_model))


class EPDSuggestSigmaStar(io.ComfyNode):
    """FLOAT sigma*: the smallest noise level at which the noised latents look unimodal (dip test)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_SuggestSigmaStar",
            display_name="EPD Suggest Sigma*",
            category=CATEGORY,
            description="Bisects in log sigma for the smallest sigma at which every probed 1-D projection of the "
            "noised reference latents passes Hartigan's dip test of unimodality (Fassina et al. 2026).",
            inputs=[
                io.Model.Input("model", tooltip=MODEL_TOOLTIP),
                io.Latent.Input("latents", tooltip="Clean reference latents, at least 4 (more is more reliable)."),
                io.Int.Input("projections", default=32, min=2, max=512, tooltip="1-D projections tested per sigma."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, advanced=True, tooltip="Directions and noise."),
            ],
            outputs=[io.Float.Output(display_name="sigma_star", tooltip="sigma* on the model's own scale.")],
        )

    @classmethod
    def execute(cls, model: Any, latents: dict, projections: int = 32, seed: int = 0) -> io.NodeOutput:
        return io.NodeOutput(skip.suggest(model, latents, projections, seed))
