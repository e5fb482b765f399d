"""What an EPD run steps on: tail, grid, table fit, form and AFS, decided once.

``plan_run`` is the one place that makes these decisions. The samplers call it; an
adapter calls it with what it reads from its host (ComfyUI: the model's sigma_min and
sigma_max, the guider's cfg) and nothing else, then samples on the plan with
``solver.run_rows`` or ``sample_epd(..., tail="keep")``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .params import EPDParams
from .schedules import drop_penultimate
from .tables import default_table
from .vocab import (
    AUTO,
    DEFAULT_FORM,
    DEFAULT_TAIL,
    FORM_CHOICES,
    FORMS,
    MAX_POINTS,
    PLUGIN_CHOICES,
    TAIL_CHOICES,
    TAILS,
    Form,
    FormChoice,
    Kind,
    PluginChoice,
    Tail,
    TailChoice,
)

GRID_RTOL = 1e-4  # a float64 table grid seen through float32 sigmas still "matches" its table
SIGMA_MIN_RTOL = 1e-2  # a penultimate sigma within 1 % of the model's sigma_min is ComfyUI's tail
CFG_DIRECTION_MAX = 1.0  # measured: the direction form wins at cfg 1 and can diverge above
AFS_REL_TOL = 1e-3  # a first sigma within 0.1 % of sigma_max counts as a pure-noise start


class RunPlan(NamedTuple):
    """The decisions of ``plan_run``; the last three fields let an adapter say what it did."""

    sigmas: torch.Tensor  # [S + 1], the grid stepped on, same dtype/device/autograd as given
    params: EPDParams  # the table on that grid (the default table when none was given)
    form: Form
    afs: bool
    tail: Tail  # the tail rule applied ("keep" when a table's own step count was given)
    rebased: bool  # a given table's grid differs from the run grid beyond GRID_RTOL
    grid_diff: float  # max |table grid - run grid|, 0.0 without a given table
    afs_skipped: bool  # AFS was asked for but the grid starts below sigma_max (img2img)
    plugin: bool = False  # EPD-Plugin's iPNDM jumps (resolve_plugin), else the plain EPD-Solver


def prepare_sigmas(sigmas: torch.Tensor, tail: Tail = "drop") -> torch.Tensor:
    """Handle ComfyUI's ``[..., sigma_min, 0]`` tail without wasting two rounds on it.

    drop: remove the penultimate sigma, so the last EPD step lands on 0 directly
    (what ComfyUI does for dpm_2 and uni_pc). stop: end at sigma_min. keep: as given.
    A grid that does not end in 0, or has fewer than 3 sigmas, is returned as given.
    """
    if tail not in TAILS:
        raise ValueError(f"tail={tail!r} is not one of {TAILS}")
    if tail == "keep" or len(sigmas) < 3 or float(sigmas[-1]) != 0.0:
        return sigmas
    return drop_penultimate(sigmas) if tail == "drop" else sigmas[:-1]


def resolve_tail(tail: TailChoice, sigmas: torch.Tensor, sigma_min: float | None) -> Tail:
    """auto: drop when the grid ends [..., sigma_min, 0] with the model's own sigma_min, else keep.

    Without a model (``sigma_min`` None, e.g. EPD Default Table) auto drops whenever the grid ends in 0.
    """
    if tail not in TAIL_CHOICES:
        raise ValueError(f"tail={tail!r} is not one of {TAIL_CHOICES}")
    if tail != AUTO:
        return tail
    if len(sigmas) < 3 or float(sigmas[-1]) != 0.0:
        return "keep"
    if sigma_min is None or math.isclose(float(sigmas[-2]), sigma_min, rel_tol=SIGMA_MIN_RTOL):
        return "drop"
    return "keep"


def resolve_form(form: FormChoice, params: EPDParams | None, cfg: float | None, plugin: bool = False) -> Form:
    """auto: the table's recorded form; else data under EPD-Plugin, and otherwise direction at cfg <= 1 and data
    with guidance (or unknown cfg).

    The plugin's extrapolated jumps and the direction form's Gauss-Legendre table do not mix: 3-8x the data
    form's error at cfg 1 on the EDM UNet (bench/results/families/edm_plugin.json).
    """
    if form not in FORM_CHOICES:
        raise ValueError(f"form={form!r} is not one of {FORM_CHOICES}")
    if form != AUTO:
        return form
    recorded = params.metadata.get("form") if params is not None else None
    if recorded in FORMS:
        return recorded
    return "direction" if not plugin and cfg is not None and cfg <= CFG_DIRECTION_MAX else "data"


def resolve_plugin(plugin: PluginChoice | bool, params: EPDParams | None, kind: Kind | None) -> bool:
    """auto: a table's recorded sampler, else on for eps/v/EDM models and off for flow models (or unknown kind).

    Measured on the per-family Fashion-MNIST UNets (docs/benchmarks.md, "Model families"): without a learned
    table the plugin beat the plain solver at every round budget on the EDM and SD1.5-schedule EPS models and
    lost on the rectified-flow model. A table without a recorded sampler (EPD Distill, RL Tune) was made
    with the plain solver. True/False are accepted for workflows saved when the input was a checkbox.
    """
    if isinstance(plugin, bool):
        return plugin
    if plugin not in PLUGIN_CHOICES:
        raise ValueError(f"plugin={plugin!r} is not one of {PLUGIN_CHOICES}")
    if plugin != AUTO:
        return plugin == "on"
    if params is not None:
        return params.metadata.get("sampler") == "epd_plugin"
    return kind == "ve"


def run_grid(sigmas: torch.Tensor, params: EPDParams | None, tail: Tail) -> tuple[torch.Tensor, Tail]:
    """The grid the engine steps on: a table's own step count as given, otherwise the tail rule."""
    if params is not None and len(sigmas) - 1 == params.num_steps:
        tail = "keep"
    grid = prepare_sigmas(sigmas, tail)
    if len(grid) < 2 or not bool((grid[1:] < grid[:-1]).all()):
        values = [round(float(s), 4) for s in grid[:12]] + (["..."] if len(grid) > 12 else [])
        if bool((grid[1:] > grid[:-1]).any()):
            raise ValueError(
                f"the sigmas must strictly decrease, but they increase somewhere: {values}; "
                "give the schedule from sigma_max down to 0 (flip a reversed grid)."
            )
        raise ValueError(
            f"the sigmas must strictly decrease, got {values}; "
            "use a schedule without repeated sigmas (e.g. EPD Sigmas or karras)."
        )
    return grid, tail


def fit_table(params: EPDParams, grid: torch.Tensor, tail: Tail) -> tuple[EPDParams, float, bool]:
    """A table applied to ``grid`` [S + 1]; returns (table, max |grid difference|, rebased).

    A table's positions are fractions of each step, so it is re-based onto the grid given
    (exactly, as float64); ``rebased`` says the grids differ beyond float32 round-off
    (GRID_RTOL), which an adapter reports. The step count must match.
    """
    steps = len(grid) - 1
    if params.num_steps != steps:
        raise ValueError(
            f"EPD table has {params.num_steps} steps but the sigmas give {steps} (tail={tail!r}); "
            "feed the sampler the table's own grid with EPD Sigmas, or use a table made for this step count."
        )
    run = grid.detach().double().cpu()
    if torch.equal(params.sigmas, run):
        return params, 0.0, False
    diff = float((run - params.sigmas).abs().max())
    rebased = not torch.allclose(run, params.sigmas, rtol=GRID_RTOL, atol=1e-7)
    try:
        return params.replace(sigmas=run), diff, rebased
    except ValueError as err:
        raise ValueError(f"cannot apply the table to these sigmas: {err}") from err


def check_run_inputs(sigmas: torch.Tensor, num_points: int) -> None:
    """Clear errors for a grid that is not [N >= 2] finite values and a K that is not a whole number in range."""
    if not torch.is_tensor(sigmas) or sigmas.ndim != 1 or len(sigmas) < 2:
        shape = tuple(sigmas.shape) if torch.is_tensor(sigmas) else type(sigmas).__name__
        raise ValueError(
            f"sigmas must be a 1-D tensor of at least 2 noise levels (N sigmas give N - 1 steps), got {shape}; "
            "connect a SIGMAS output (e.g. EPD Sigmas or BasicScheduler) with steps >= 1."
        )
    if not bool(torch.isfinite(sigmas).all()):
        raise ValueError("sigmas contain nan or inf; every noise level must be a finite number.")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or not 1 <= num_points <= MAX_POINTS:
        raise ValueError(
            f"num_points must be a whole number between 1 and {MAX_POINTS}, got {num_points!r}; "
            "K points per step cost one model call of K x batch rows."
        )


def plan_run(
    sigmas: torch.Tensor,
    params: EPDParams | None = None,
    *,
    num_points: int = 2,
    form: FormChoice = DEFAULT_FORM,
    tail: TailChoice = DEFAULT_TAIL,
    afs: bool | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    cfg: float | None = None,
    plugin: PluginChoice | bool = False,
    kind: Kind | None = None,
) -> RunPlan:
    """Decide tail, grid, table, form and AFS for one run on ``sigmas`` [N].

    form, tail: engine values or "auto" (resolve_form, resolve_tail). afs: None follows the
    table's flag (the default table's is on when sigma_max is given). sigma_min, sigma_max, cfg: what the host knows about the model and guider
    (None when unknown); with sigma_max, AFS is skipped unless the grid starts at pure noise.
    plugin: on/off or "auto" (resolve_plugin), which reads ``kind``, the model's "ve" or "flow".
    """
    check_run_inputs(sigmas, num_points)
    grid, tail_rule = run_grid(sigmas, params, resolve_tail(tail, sigmas, sigma_min))
    grid_diff, rebased = 0.0, False
    if params is not None:
        params, grid_diff, rebased = fit_table(params, grid, tail_rule)
    use_plugin = resolve_plugin(plugin, params, kind)
    form_used = resolve_form(form, params, cfg, use_plugin)
    if params is None:
        # The training-free table takes the analytical first step when the host can tell a pure-noise
        # start (it gives sigma_max): one model round saved, and every per-family benchmark row ran so.
        params = default_table(grid, num_points, form=form_used, afs=sigma_max is not None)
    wanted = params.afs if afs is None else bool(afs)
    skipped = wanted and sigma_max is not None and float(grid[0]) < sigma_max * (1.0 - AFS_REL_TOL)
    afs_used = wanted and not skipped
    return RunPlan(grid, params, form_used, afs_used, tail_rule, rebased, grid_diff, skipped, use_plugin)
