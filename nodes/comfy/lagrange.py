"""ComfyUI boundary for EPD Lagrange Sampler: its KSAMPLER sampler function (issue 16 A).

Reuses the EPD sampler's bridge helpers (nodes/comfy/sampling.py): model_sampling and kind,
the batched/sequential choice and inpainting-mask tiling, progress and interruption.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import comfy.samplers
import torch

from ...epd_core.lagrange import check_options, check_sigmas, run_lagrange
from .sampling import kind_of, model_sampling_of, points_denoiser, step_callback

LAGRANGE_NODE = "EPD Lagrange Sampler"


@torch.no_grad()
def sample_lagrange_comfy(
    model: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable | None = None,
    disable: bool | None = None,
    *,
    order: int = 2,
    refinements: int = 2,
    nodes: str = "chebyshev",
    warm_start: bool = False,
    parallel: str = "auto",
) -> torch.Tensor:
    """Sampler function for comfy.samplers.KSAMPLER: epd_core.lagrange on the model's kind.

    Every consecutive sigma pair is one interval; the K node calls of a sweep form one K*B
    batch unless ``parallel`` (or an untileable mask) asks for one call per node.
    """
    if len(sigmas) < 2:
        return x
    extra_args = {} if extra_args is None else dict(extra_args)
    kind = kind_of(model_sampling_of(model))
    denoiser, mode = points_denoiser(parallel, model, extra_args, x.shape[0], LAGRANGE_NODE)
    try:
        check_options(order, refinements, nodes, kind, warm_start, mode)
        check_sigmas(sigmas, kind)
    except ValueError as err:
        raise ValueError(f"{LAGRANGE_NODE}: {err}") from err
    report = step_callback(callback, len(sigmas) - 1, len(sigmas) - 1)
    return run_lagrange(denoiser, x, sigmas, extra_args, report,
                        order=order, refinements=refinements, nodes=nodes, warm_start=warm_start, kind=kind,
                        parallel=mode)  # fmt: skip


def make_lagrange_sampler(**options: Any) -> comfy.samplers.KSAMPLER:
    """The SAMPLER object of EPD Lagrange Sampler."""
    return comfy.samplers.KSAMPLER(sample_lagrange_comfy, extra_options=options)
