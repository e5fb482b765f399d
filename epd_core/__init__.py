"""ComfyUI-EPD's solver engine: pure torch, no ComfyUI imports.

A model reaches this package only as a k-diffusion denoiser,
``model(x, sigma_vec, **extra_args) -> denoised``.
"""

from __future__ import annotations

from .grids import epd_sigmas
from .params import EPDParams
from .plan import plan_run, prepare_sigmas
from .solver import StepRow, sample_epd, sample_epd_plugin
from .table_io import load_table, save_table, table_from_json, table_to_json
from .tables import default_table
from .vocab import DEFAULT_FORM

__all__ = [
    "DEFAULT_FORM",
    "EPDParams",
    "StepRow",
    "default_table",
    "epd_sigmas",
    "load_table",
    "plan_run",
    "prepare_sigmas",
    "sample_epd",
    "sample_epd_plugin",
    "save_table",
    "table_from_json",
    "table_to_json",
]
