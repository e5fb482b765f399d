"""ComfyUI hooks for the exact-denoiser benchmarks: its samplers, schedulers and model_sampling.

Imported only when COMFYUI_PATH points at a ComfyUI checkout.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from epd_core.digits import SIGMA_MAX, SIGMA_MIN, ExactModel


def comfy_modules() -> SimpleNamespace | None:
    """ComfyUI's sampler modules when COMFYUI_PATH points at a checkout, else None."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        return None
    sys.path.insert(0, path)
    from comfy.cli_args import args

    args.cpu = True
    import comfy.k_diffusion.sampling as kd
    import comfy.model_sampling as ms
    import comfy.samplers as samplers
    from comfy.extra_samplers import uni_pc

    return SimpleNamespace(kd=kd, ms=ms, samplers=samplers, uni_pc=uni_pc)


def with_model_sampling(model: ExactModel, comfy: SimpleNamespace) -> ExactModel:
    """Attach an EDM model_sampling where ComfyUI samplers look for it."""

    class EDMSampling(comfy.ms.EDM, comfy.ms.ModelSamplingContinuousEDM):
        pass

    sampling = EDMSampling()
    sampling.set_parameters(SIGMA_MIN, SIGMA_MAX, 0.5)
    model.inner_model = SimpleNamespace(
        inner_model=SimpleNamespace(model_sampling=sampling),
        model_patcher=SimpleNamespace(get_model_object=lambda name: sampling),
    )
    return model
