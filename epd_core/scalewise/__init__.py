"""Scale-wise sampling (SwD, Starodubcev et al. 2025; issue 16 C): sampler, presets, a Gaussian-field test bed.

sampler.py: sample_scalewise, the k-diffusion-signature sampler (denoise, resize x0,
re-noise with the model's own noise scaling); schedule.py: SwD's published presets and
the latent sizes they give at any width and height; fields.py: power-law Gaussian random
fields, whose exact denoiser works at any resolution (tests and bench/bench_scalewise.py).
"""

from .sampler import (
    NOISE_SCALINGS,
    UPSCALE_MODES,
    check_schedule,
    flow_noise_scaling,
    resize,
    sample_scalewise,
    start_state,
    ve_noise_scaling,
)
from .schedule import (
    CUSTOM,
    PRESET_CHOICES,
    PRESETS,
    Preset,
    ScaleSchedule,
    parse_scales,
    preset_factors,
    scale_sizes,
)

__all__ = [
    "CUSTOM", "NOISE_SCALINGS", "PRESETS", "PRESET_CHOICES", "UPSCALE_MODES", "Preset", "ScaleSchedule", "check_schedule",
    "flow_noise_scaling", "parse_scales", "preset_factors", "resize", "sample_scalewise", "scale_sizes",
    "start_state", "ve_noise_scaling",
]  # fmt: skip
