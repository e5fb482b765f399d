"""Choices and defaults shared by the EPD nodes and the ComfyUI boundary.

Plain constants, no ComfyUI imports. The choices and defaults themselves (forms, tails, kinds,
schedules, with "auto") are the engine's vocabulary, epd_core.vocab, which the nodes import
directly; this module holds the node category, the KSampler entry's names and the tooltips.
"""

from __future__ import annotations

CATEGORY = "sampling/custom_sampling/epd"
KSAMPLER_ENTRY_ENV = "EPD_KSAMPLER_ENTRY"
KSAMPLER_ENTRY_NAME = "epd"

TAIL_TOOLTIP = (
    "What to do with the end of the sigmas. ComfyUI schedules end in [..., sigma_min, 0]. "
    "drop: remove sigma_min so no two-round EPD step is spent on the tiny last interval "
    "(the last step lands on 0 directly, like ComfyUI does for dpm_2/uni_pc). "
    "stop: end at sigma_min. keep: use the sigmas as given. "
    "auto: drop when the sigmas end with the model's own sigma_min followed by 0 (every ComfyUI "
    "scheduler, and EPD Sigmas), keep otherwise; without a model (EPD Default Table) drop whenever they end in 0. "
    "A learned table whose step count already matches the sigmas is used as given."
)
FORM_TOOLTIP = (
    "How the K evaluations are combined. direction: the paper's update, a weighted sum of "
    "slopes (x - D)/tau; most accurate without guidance. data: average the K denoised predictions and take one "
    "exact exponential-integrator step; stays stable under strong CFG. auto: the table's own form if it records "
    "one, else direction at cfg <= 1 and data above."
)
TABLE_FORM_TOOLTIP = (
    "The step form the table is made for (recorded in the table; EPD Sampler's form=auto follows it). "
    "direction: the paper's weighted sum of slopes; data: averaged denoised predictions and one "
    "exponential-integrator step, stable under strong CFG."
)
