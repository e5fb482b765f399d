"""ComfyUI-EPD's solver engine: pure torch, no ComfyUI imports.

A model reaches this package only as a k-diffusion denoiser,
``model(x, sigma_vec, **extra_args) -> denoised``.
"""

from __future__ import annotations

from .grids import epd_sigmas
from .params import EPDParams
from .solver import DEFAULT_FORM, prepare_sigmas, sample_epd, sample_epd_plugin
from .table_io import load_table, save_table, table_from_json, table_to_json
from .tables import default_table

__all__ = [
    "DEFAULT_FORM",
    "EPDParams",
    "default_table",
    "epd_sigmas",
    "load_table",
    "prepare_sigmas",
    "sample_epd",
    "sample_epd_plugin",
    "save_table",
    "table_from_json",
    "table_to_json",
]
