"""ComfyUI boundary of the scale-wise nodes (issue 16 C): the KSAMPLER function and the schedule.

Latent convention: the LATENT fed to SamplerCustom(Advanced) is at the FINAL size (an
EmptyLatentImage / EmptySD3LatentImage at the schedule's width and height), so ComfyUI's
memory estimate and noise are made for the largest scale. KSAMPLER hands the sampler
x = noise_scaling(sigmas[0], noise, latent) at that size; epd_core.scalewise.start_state
subsamples it to the first scale (nearest-exact keeps the noise exactly Gaussian; the clean
latent's part is area-averaged). Re-noising uses the model's own model_sampling.noise_scaling,
so flow models get sigma * n + (1 - sigma) * x0 (SamplerLCMUpscale adds sigma * n to all).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import comfy.model_sampling
import comfy.samplers
import torch

from ...epd_core.scalewise import (
    CUSTOM,
    PRESETS,
    ScaleSchedule,
    parse_scales,
    preset_factors,
    sample_scalewise,
    scale_sizes,
)
from ...epd_core.scalewise.schedule import describe, parse_numbers
from .sampling import kind_of, model_sampling_of, step_callback

SAMPLER_NODE = "EPD Scale-wise Sampler"
SCHEDULE_NODE = "EPD Scale-wise Schedule"


def _latent_weight(model_sampling: Any, sigma: torch.Tensor) -> float:
    """The clean latent's coefficient in noise_scaling at sigma: 1 for eps/v, 1 - sigma for flow."""
    one = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    return float(model_sampling.noise_scaling(sigma.double().cpu(), torch.zeros_like(one), one).flatten()[0])


@torch.no_grad()
def sample_scalewise_comfy(
    model: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable | None = None,
    disable: bool | None = None,
    *,
    schedule: ScaleSchedule,
    upscale: str = "bicubic",
) -> torch.Tensor:
    """Sampler function for comfy.samplers.KSAMPLER: epd_core.scalewise on the model's noise scaling."""
    if len(sigmas) < 2:
        return x
    extra_args = {} if extra_args is None else dict(extra_args)
    if extra_args.get("denoise_mask") is not None:
        raise ValueError(f"{SAMPLER_NODE}: inpainting masks are not supported (the latent changes size every "
                         "step); remove the mask (SetLatentNoiseMask) or use EPD Sampler for inpainting")  # fmt: skip
    ms = model_sampling_of(model)
    latent = getattr(model, "latent_image", None)
    report = step_callback(callback, len(sigmas) - 1, len(sigmas) - 1)
    try:
        return sample_scalewise(model, x, sigmas, extra_args, report, disable, scales=list(schedule.sizes),
                                upscale=upscale, noise_scaling=ms.noise_scaling, latent=latent,
                                latent_weight=_latent_weight(ms, sigmas[0]))  # fmt: skip
    except ValueError as err:
        raise ValueError(f"{SAMPLER_NODE}: {err} (schedule: {describe(schedule.sizes)})") from err


def make_scalewise_sampler(schedule: ScaleSchedule, upscale: str) -> comfy.samplers.KSAMPLER:
    """The SAMPLER object of EPD Scale-wise Sampler."""
    return comfy.samplers.KSAMPLER(sample_scalewise_comfy, extra_options={"schedule": schedule, "upscale": upscale})


# --- the schedule ------------------------------------------------------------------------------


def model_patch(model_patcher: Any) -> int:
    """The diffusion model's patch size in latent pixels: 2 for SD3 / Flux DiTs, 1 for UNets."""
    patch = getattr(getattr(model_patcher.model, "diffusion_model", None), "patch_size", 1)
    patch = patch[-1] if isinstance(patch, (tuple, list)) else patch
    return int(patch) if isinstance(patch, int) and patch >= 1 else 1


def latent_ratio(model_patcher: Any) -> int:
    """Pixels per latent pixel (the VAE's spatial downscale, 8 for SD / SDXL / SD3 / Flux)."""
    fmt = getattr(model_patcher.model, "latent_format", None)
    return int(getattr(fmt, "spacial_downscale_ratio", 8) or 8)


def preset_sigmas(ms: Any, preset_name: str) -> torch.Tensor:
    """A preset's sigmas in the model's own sigma space; ValueError when the preset's space does not fit."""
    p, kind = PRESETS[preset_name], kind_of(ms)
    if p.space == "flow":
        if kind != "flow":
            raise ValueError(f"preset {preset_name} is for a flow model ({p.family}) but this model is eps/v; "
                             "choose sdxl_4steps or custom")  # fmt: skip
        return torch.tensor(p.sigmas, dtype=torch.float64)
    if not isinstance(ms, comfy.model_sampling.ModelSamplingDiscrete):
        raise ValueError(f"preset {preset_name} gives DDPM timesteps and needs a discrete-timestep model (SDXL, "
                         f"SD1.5), but this model uses {type(ms).__name__}; choose a flow preset or custom")  # fmt: skip
    steps = torch.tensor([min(1000.0 * s, 999.0) for s in p.sigmas[:-1]], dtype=torch.float64)
    return torch.cat([ms.sigma(steps).double().cpu(), torch.zeros(1, dtype=torch.float64)])


def custom_sigmas(ms: Any, text: str) -> torch.Tensor:
    """custom_sigmas on the model's own scale, within its range, ending in 0 by convention."""
    values = parse_numbers(text, "custom_sigmas")
    top = float(ms.sigma_max)
    if not values or any(v < 0 or v > top * (1 + 1e-6) for v in values):
        raise ValueError(f"custom_sigmas must be numbers in [0, {top:.4g}] (this model's sigma range), got "
                         f"{values}; e.g. '1.0, 0.8959, 0.7371, 0.6022, 0' for a flow model")  # fmt: skip
    return torch.tensor(values, dtype=torch.float64)


def schedule(
    model_patcher: Any, preset: str, width: int, height: int, patch: int, scales_text: str, sigmas_text: str
) -> tuple[ScaleSchedule, torch.Tensor]:
    """(scales, SIGMAS) of EPD Scale-wise Schedule for a final image of width x height pixels."""
    ms = model_patcher.get_model_object("model_sampling")
    ratio, patch = latent_ratio(model_patcher), patch or model_patch(model_patcher)
    try:
        if preset == CUSTOM:
            factors, sigmas = parse_scales(scales_text), custom_sigmas(ms, sigmas_text)
        else:
            factors, sigmas = preset_factors(PRESETS[preset]), preset_sigmas(ms, preset)
        sizes = scale_sizes(factors, height // ratio, width // ratio, patch)
        if len(sigmas) != len(sizes) + 1:
            raise ValueError(f"{len(sizes)} scales need {len(sizes) + 1} sigmas (one per step and the final 0), "
                             f"got {len(sigmas)}; give custom_sigmas one more value than custom_scales")  # fmt: skip
    except (KeyError, ValueError) as err:
        raise ValueError(f"{SCHEDULE_NODE}: {err}") from err
    return ScaleSchedule(tuple(sizes), patch, preset), sigmas.float()
