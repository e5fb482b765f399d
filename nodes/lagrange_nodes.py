"""EPD Lagrange Sampler (SAMPLER): high-order interval collocation, training-free (issue 16 A)."""

from __future__ import annotations

from ..epd_core.lagrange import PLACEMENTS
from ..epd_core.vocab import PARALLEL_CHOICES
from .comfy import lagrange
from .comfy.api import io
from .options import CATEGORY


def lagrange_inputs() -> list[io.Input]:
    """Inputs of EPD Lagrange Sampler."""
    return [
        io.Int.Input("order", default=2, min=1, max=5,
                     tooltip="K: degree of the Lagrange polynomial of the denoiser inside each sigma interval "
                     "(K + 1 nodes). Each refinement costs K model evaluations in one batched call."),
        io.Int.Input("refinements", default=2, min=0, max=8,
                     tooltip="R: fixed-point sweeps per interval. The observed order is about min(R + 1, K + 1); "
                     "0 is a plain DDIM step. Cost per interval: 1 + K*R evaluations in 1 + R sequential rounds."),
        io.Combo.Input("nodes", options=list(PLACEMENTS), default="chebyshev",
                       tooltip="Where the nodes sit inside each interval (in log-sigma, half log-SNR for flow): "
                       "chebyshev (Chebyshev-Lobatto, denser at the ends) or equispaced."),
        io.Boolean.Input("warm_start", default=False,
                         tooltip="Few-step variant: predict the node values by extrapolating the previous "
                         "interval and reuse its last evaluation, so an interval costs K*R evaluations in R "
                         "rounds. Needs refinements >= 1."),
        io.Combo.Input("parallel", options=list(PARALLEL_CHOICES), default="auto", advanced=True,
                       tooltip="batched: the K nodes of a sweep in one K*batch model call. sequential: one call "
                       "per node (less memory). auto: batched unless an inpainting mask or context windows "
                       "prevent it."),
    ]  # fmt: skip


class EPDLagrangeSampler(io.ComfyNode):
    """SAMPLER for SamplerCustom / SamplerCustomAdvanced running the Lagrange collocation sampler."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_LagrangeSampler",
            display_name="EPD Lagrange Sampler",
            category=CATEGORY,
            description="Training-free high-order sampler after Li, Zhou, Wei, Chen (2025): per sigma interval, "
            "a K-th order Lagrange polynomial of the denoiser integrated exactly against the exponential-integrator "
            "weight, with R fixed-point sweeps. A high-accuracy sampler: at few steps DPM++ 2M and EPD beat it "
            "per evaluation (docs/lagrange.md).",
            inputs=lagrange_inputs(),
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def validate_inputs(cls, refinements: int = 2, warm_start: bool = False) -> bool | str:
        if warm_start and refinements < 1:
            return "EPD Lagrange Sampler: warm_start needs refinements >= 1; set refinements to 1 or more."
        return True

    @classmethod
    def execute(
        cls, order: int = 2, refinements: int = 2, nodes: str = "chebyshev", warm_start: bool = False,
        parallel: str = "auto",
    ) -> io.NodeOutput:  # fmt: skip
        options = {"order": order, "refinements": refinements, "nodes": nodes, "warm_start": warm_start}
        return io.NodeOutput(lagrange.make_lagrange_sampler(**options, parallel=parallel))
