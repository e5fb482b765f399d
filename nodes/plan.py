"""What the EPD sampler runs: grid, tail, form and table decisions (comfyui-integration.md §1.6, §9).

Pure decisions on tensors and numbers; the boundary (nodes.comfy.sampling) supplies what it reads from ComfyUI
(the model's sigma_min, the guider's cfg) and nothing here imports ComfyUI.
"""

from __future__ import annotations

import logging
import math

import torch

from ..epd_core.params import EPDParams
from ..epd_core.solver import prepare_sigmas
from .options import FORMS, TAILS

log = logging.getLogger(__name__)

SAMPLER_NODE = "EPD Sampler"
GRID_RTOL = 1e-4  # a float64 table grid seen through float32 sigmas still "matches"
SIGMA_MIN_RTOL = 1e-2  # a penultimate sigma within 1 % of the model's sigma_min is ComfyUI's tail
CFG_DIRECTION_MAX = 1.0  # measured: the direction form wins at cfg 1 and can diverge above


def resolve_tail(tail: str, sigmas: torch.Tensor, sigma_min: float) -> str:
    """auto: drop when the grid ends [..., sigma_min, 0] with the model's own sigma_min, else keep."""
    if tail not in TAILS:
        raise ValueError(f"{SAMPLER_NODE}: tail={tail!r} is not one of {TAILS}.")
    if tail != "auto":
        return tail
    ends_in_tail = len(sigmas) > 2 and float(sigmas[-1]) == 0.0
    if ends_in_tail and math.isclose(float(sigmas[-2]), sigma_min, rel_tol=SIGMA_MIN_RTOL):
        return "drop"
    return "keep"


def table_tail(tail: str) -> str:
    """EPD Default Table has no model to compare with: auto drops whenever the sigmas end in 0."""
    if tail not in TAILS:
        raise ValueError(f"EPD Default Table: tail={tail!r} is not one of {TAILS}.")
    return "drop" if tail == "auto" else tail


def resolve_form(form: str, params: EPDParams | None, cfg: float | None) -> str:
    """auto: the table's recorded form, else direction at cfg <= 1 and data with guidance (or unknown cfg)."""
    if form not in FORMS:
        raise ValueError(f"{SAMPLER_NODE}: form={form!r} is not one of {FORMS}.")
    if form != "auto":
        return form
    recorded = params.metadata.get("form") if params is not None else None
    if recorded in ("direction", "data"):
        return recorded
    return "direction" if cfg is not None and cfg <= CFG_DIRECTION_MAX else "data"


def run_grid(sigmas: torch.Tensor, params: EPDParams | None, tail: str) -> torch.Tensor:
    """The grid the engine steps on: a table's own length as given, otherwise the tail rule."""
    grid = sigmas if params is not None and len(sigmas) - 1 == params.num_steps else prepare_sigmas(sigmas, tail)
    if not bool((grid[1:] < grid[:-1]).all()):
        values = [round(float(s), 4) for s in grid]
        raise ValueError(
            f"{SAMPLER_NODE}: the sigmas must strictly decrease, got {values}; "
            "use a schedule without repeated sigmas (e.g. EPD Sigmas or karras)."
        )
    return grid


def warn_table_options(params: EPDParams, form: str, max_order: int) -> None:
    """One warning when the sampler's form or plugin setting differs from what the table was made for."""
    made_form, made_sampler = params.metadata.get("form"), params.metadata.get("sampler")
    if made_form not in (None, form):
        log.warning("%s: the table was made for form=%r but sampling uses form=%r.", SAMPLER_NODE, made_form, form)
    used = "epd_plugin" if max_order else "epd"
    if made_sampler in ("epd", "epd_plugin") and made_sampler != used:
        log.warning(
            "%s: the table was made for sampler %r but the plugin setting gives %r.", SAMPLER_NODE, made_sampler, used
        )


def fit_table(params: EPDParams | None, grid: torch.Tensor, tail: str) -> EPDParams | None:
    """Check a table's step count against the grid; re-base it (with one warning) when the grids differ."""
    if params is None:
        return None
    if params.num_steps != len(grid) - 1:
        raise ValueError(
            f"{SAMPLER_NODE}: the table has {params.num_steps} steps but the sigmas give {len(grid) - 1} "
            f"(tail={tail!r}); feed the sampler the table's own grid with EPD Sigmas, "
            "or use a table made for this step count."
        )
    run = grid.detach().to("cpu", torch.float64)
    if torch.allclose(run, params.sigmas, rtol=GRID_RTOL, atol=1e-7):
        return params
    log.warning(
        "%s: the sigmas differ from the table's grid (max |diff| %.3g); its positions are applied to the given "
        "sigmas. Use EPD Sigmas with this table to sample on the grid it was made for.",
        SAMPLER_NODE,
        float((run - params.sigmas).abs().max()),
    )
    try:
        return params.replace(sigmas=run)
    except ValueError as err:
        raise ValueError(f"{SAMPLER_NODE}: cannot apply the table to these sigmas: {err}") from err
