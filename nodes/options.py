"""Choices and defaults shared by the EPD nodes and the ComfyUI boundary (comfyui-integration.md §1.6, §9).

Plain constants, no ComfyUI imports. ``DEFAULT_FORM`` is the single place that decides
which EPD step form the nodes and the optional KSampler entry use by default.
"""

from __future__ import annotations

# Measured (README benchmark): with CFG 1 the direction form on the default grid has about half the
# error of the data form; with CFG > 1 only the data form never diverged (direction reached 98 at
# CFG 7.5 on a karras grid). "auto" picks by the guider's cfg, or follows the table's recorded form.
DEFAULT_FORM = "auto"
FORMS = ("auto", "direction", "data")
TABLE_FORMS = ("direction", "data")
DEFAULT_TABLE_FORM = "data"
PARALLEL_MODES = ("auto", "batched", "sequential")
AFS_MODES = ("auto", "on", "off")
TAILS = ("auto", "drop", "stop", "keep")
TABLE_KINDS = ("auto", "gauss_legendre", "uniform")
SCHEDULES = ("auto", "polynomial", "logsnr", "time_uniform", "discrete", "flowmatch")
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
