"""ComfyUI boundary, sampling: the one sampler function, model_sampling and sigma grids.

It turns what ``comfy.samplers.KSAMPLER`` hands a
sampler function into the engine's denoiser contract, checks tables against models and
builds sigma grids from a model's ``model_sampling``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import comfy.k_diffusion.sampling
import comfy.model_management
import comfy.model_sampling
import comfy.samplers
import torch

from ...epd_core import schedules
from ...epd_core.params import EPDParams
from ...epd_core.plan import RunPlan, plan_run, prepare_sigmas, resolve_tail
from ...epd_core.solver import StepConfig, StepRow, run_rows, table_rows
from ...epd_core.vocab import AFS_CHOICES, AUTO, DEFAULT_FORM_CHOICE, PARALLEL_CHOICES, PluginChoice
from ..compat import table_mismatch
from ..options import KSAMPLER_ENTRY_NAME

log = logging.getLogger(__name__)

SAMPLER_NODE = "EPD Sampler"


# --- model_sampling -------------------------------------------------------------------------


def model_sampling_of(model: Any) -> Any:
    """The model_sampling behind the KSamplerX0Inpaint that KSAMPLER passes to a sampler (§1.3)."""
    guider = getattr(model, "inner_model", None)
    patcher = getattr(guider, "model_patcher", None)
    if patcher is not None and hasattr(patcher, "get_model_object"):
        return patcher.get_model_object("model_sampling")
    try:
        return guider.inner_model.model_sampling
    except AttributeError as err:
        raise TypeError(
            f"{SAMPLER_NODE}: cannot find the model's model_sampling on {type(model).__name__}; "
            "run EPD through SamplerCustom, SamplerCustomAdvanced or KSampler."
        ) from err


def kind_of(model_sampling: Any) -> str:
    """'flow' for CONST (rectified-flow) models, 've' for eps/v/x0/EDM ones (§1.5)."""
    return "flow" if isinstance(model_sampling, comfy.model_sampling.CONST) else "ve"


def check_table_fits(params: EPDParams, model_sampling: Any, model_config: Any, node: str) -> None:
    """Raise when a table's metadata (prediction, family) contradicts the model."""
    problem = table_mismatch(params.metadata, kind_of(model_sampling), type(model_sampling).__name__, model_config)
    if problem:
        raise ValueError(f"{node}: {problem}; load a table made for this model, or use EPD Default Table.")


def guider_cfg(model: Any) -> float | None:
    """The CFG scale of the guider behind a sampler's model (CFGGuider.cfg), None when it has none."""
    cfg = getattr(getattr(model, "inner_model", None), "cfg", None)
    return float(cfg) if isinstance(cfg, (int, float)) else None


def table_grid(sigmas: torch.Tensor, tail: str) -> torch.Tensor:
    """EPD Default Table's grid: without a model, auto drops the penultimate sigma of a grid ending in 0."""
    grid = sigmas.detach().to("cpu").double()
    try:
        return prepare_sigmas(grid, resolve_tail(tail, grid, None))
    except ValueError as err:
        raise ValueError(f"EPD Default Table: {err}") from err


def _model_config_of(model: Any) -> Any:
    """The BaseModel's model_config behind a sampler's model, when reachable."""
    base = getattr(getattr(model, "inner_model", None), "inner_model", None)
    return getattr(base, "model_config", None)


# --- sigma grids (EPD Sigmas) -----------------------------------------------------------------


FLOW_SCHEDULES = ("flowmatch", "flow_uniform")


def auto_schedule(model_sampling: Any) -> str:
    """The default grid per model family.

    Measured on the per-family benchmark (bench/fmnist/bench_families.py, docs/benchmarks.md): flow models
    get flow_uniform (uniform in shifted time, ComfyUI's "simple"; diffusers' flowmatch grid wastes its last
    step at few steps); every other family, SD1.5-style discrete ones included, the polynomial (karras) grid
    over the model's sigma range, which beat the discrete-time grid of EPD's papers at 3-9 rounds there.
    """
    ms = comfy.model_sampling
    if isinstance(model_sampling, (ms.ModelSamplingFlux, ms.ModelSamplingDiscreteFlow)):
        return "flow_uniform"
    return "polynomial"


def _schedule_kwargs(model_sampling: Any, name: str, node: str) -> dict[str, Any]:
    """Arguments of epd_core.schedules.get_sigmas_<name> taken from the model."""
    ms = comfy.model_sampling
    if name == "discrete":
        if not isinstance(model_sampling, ms.ModelSamplingDiscrete):
            raise ValueError(
                f"{node}: schedule 'discrete' needs a model with a discrete timestep table (SD1.x, SDXL), "
                f"but this model uses {type(model_sampling).__name__}; choose auto, polynomial or logsnr."
            )
        return {"model_sigmas": model_sampling.sigmas}
    if name in FLOW_SCHEDULES:
        if isinstance(model_sampling, ms.ModelSamplingFlux):
            return {"mu": float(model_sampling.shift)}
        if isinstance(model_sampling, ms.ModelSamplingDiscreteFlow):
            return {"shift": float(model_sampling.shift)}
        raise ValueError(
            f"{node}: schedule '{name}' needs a flow-matching model (SD3, Flux, ...), but this model uses "
            f"{type(model_sampling).__name__}; choose auto, polynomial or logsnr."
        )
    return {"sigma_min": float(model_sampling.sigma_min), "sigma_max": float(model_sampling.sigma_max)}


def schedule_sigmas(model_patcher: Any, schedule: str, steps: int, end_at_zero: bool, node: str) -> torch.Tensor:
    """A default EPD grid of ``steps`` steps in the model's sigma space, float32 CPU like ComfyUI's.

    With ``end_at_zero`` the grid ends as ComfyUI's schedulers do, [..., sigma_min, 0] with the
    model's own sigma_min, which EPD Sampler's tail rule drops: steps=N is N sampler steps on
    every family. The flow grids give the N step starts (diffusers' flowmatch: its N-point grid,
    whose last sigma is the model's own sigma_min; flow_uniform: uniform in time), and the model's
    sigma_min is appended after them.
    """
    model_sampling = model_patcher.get_model_object("model_sampling")
    name = auto_schedule(model_sampling) if schedule == "auto" else schedule
    kwargs = _schedule_kwargs(model_sampling, name, node)
    flow_tail = end_at_zero and name in FLOW_SCHEDULES
    try:
        if flow_tail and name == "flow_uniform":
            grid = schedules.get_sigmas(name, steps, **kwargs)
        elif flow_tail:
            grid = schedules.get_sigmas(name, max(steps, 2), **kwargs)[:steps]
        else:
            grid = schedules.get_sigmas(name, steps + 1, **kwargs)
    except ValueError as err:
        raise ValueError(f"{node}: {err}") from err
    if flow_tail:
        grid = torch.cat([grid, grid.new_tensor([float(model_sampling.sigma_min)])])
    grid = schedules.append_zero(grid) if end_at_zero else grid
    return grid.float()


def table_sigmas(model_patcher: Any, params: EPDParams, node: str) -> torch.Tensor:
    """A table's own grid, after checking that the table fits the model."""
    model_sampling = model_patcher.get_model_object("model_sampling")
    check_table_fits(params, model_sampling, getattr(model_patcher.model, "model_config", None), node)
    if kind_of(model_sampling) == "flow" and float(params.sigmas[0]) > 1.0 + 1e-6:
        raise ValueError(
            f"{node}: the table's grid starts at sigma {float(params.sigmas[0]):.4g} but flow models live in "
            "sigma <= 1; this table was made for an eps/v model."
        )
    return params.sigmas.float()


# --- the sampler function --------------------------------------------------------------------


def _tile(t: torch.Tensor | None, reps: int, batch: int) -> torch.Tensor | None:
    """K-major repeat [B, ...] -> [reps * B, ...]; batch-1 tensors broadcast and stay as they are."""
    if t is None or reps == 1 or t.shape[0] != batch:
        return t
    return torch.cat([t] * reps)


class TiledInpaint:
    """KSamplerX0Inpaint for K*B batches: latent, noise and mask repeated K-major (§1.6 pitfall 2)."""

    def __init__(self, model_k: Any, batch: int) -> None:
        self.model_k, self.batch = model_k, batch
        self.inner_model, self.sigmas = model_k.inner_model, model_k.sigmas
        self._tiled: dict[int, tuple[Any, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, denoise_mask: Any = None, **kwargs: Any) -> torch.Tensor:
        reps = x.shape[0] // self.batch
        if denoise_mask is None or reps <= 1:
            return self.model_k(x, sigma, denoise_mask=denoise_mask, **kwargs)
        if reps not in self._tiled:
            copy = comfy.samplers.KSamplerX0Inpaint(self.model_k.inner_model, self.model_k.sigmas)
            copy.latent_image = _tile(self.model_k.latent_image, reps, self.batch)
            copy.noise = _tile(self.model_k.noise, reps, self.batch)
            self._tiled[reps] = (copy, _tile(denoise_mask, reps, self.batch))
        copy, mask = self._tiled[reps]
        return copy(x, sigma, denoise_mask=mask, **kwargs)


def _inpaint_blocker(model: Any, extra_args: dict[str, Any], batch: int) -> str | None:
    """Why this run's inpainting mask cannot ride along a K*B batch, or None."""
    mask = extra_args.get("denoise_mask")
    if mask is None:
        return None
    if "denoise_mask_function" in (extra_args.get("model_options") or {}):
        return "a denoise-mask function (e.g. Differential Diffusion) reads sigma[0] for the whole batch"
    if not isinstance(model, comfy.samplers.KSamplerX0Inpaint):
        return f"the inpainting mask is applied by {type(model).__name__}, which EPD cannot tile"
    sizes = [int(t.shape[0]) for t in (mask, model.latent_image, model.noise) if t is not None]
    if any(size not in (1, batch) for size in sizes):
        return f"mask/latent/noise batch sizes {sizes} do not match the batch {batch}"
    return None


def resolve_parallel(
    parallel: str, model: Any, extra_args: dict[str, Any], batch: int, node: str = SAMPLER_NODE
) -> str:
    """auto -> sequential under an untileable mask or a context-window handler, else batched."""
    if parallel not in PARALLEL_CHOICES:
        raise ValueError(f"{node}: parallel={parallel!r} is not one of {PARALLEL_CHOICES}.")
    blocker = _inpaint_blocker(model, extra_args, batch)
    if parallel == "batched" and blocker:
        raise ValueError(f"{node}: parallel='batched' cannot run here: {blocker}; set parallel to auto or sequential.")
    if parallel != "auto":
        return parallel
    if (extra_args.get("model_options") or {}).get("context_handler") is not None:
        blocker = "a context-window handler splits the batch"
    if blocker:
        log.warning("%s: evaluating the K points one at a time because %s.", node, blocker)
        return "sequential"
    return "batched"


def points_denoiser(
    parallel: str, model: Any, extra_args: dict[str, Any], batch: int, node: str = SAMPLER_NODE
) -> tuple[Any, str]:
    """(denoiser, mode) for K-point calls: the mode resolved, and an inpainting mask tiled K-major when batched."""
    mode = resolve_parallel(parallel, model, extra_args, batch, node)
    tiled = mode == "batched" and extra_args.get("denoise_mask") is not None
    return (TiledInpaint(model, batch) if tiled else model), mode


def afs_choice(afs: str) -> bool | None:
    """The node's afs setting for epd_core.plan: auto -> None (the table's flag), on/off -> True/False."""
    if afs not in AFS_CHOICES:
        raise ValueError(f"{SAMPLER_NODE}: afs={afs!r} is not one of {AFS_CHOICES}.")
    return None if afs == AUTO else afs == "on"


def report_plan(run: RunPlan, params: EPDParams | None) -> None:
    """Log what the plan changed or skipped: a re-based table, AFS off for img2img, option mismatches."""
    if params is not None:
        warn_table_options(params, run.form, run.plugin)
    if run.rebased:
        log.warning(
            "%s: the sigmas differ from the table's grid (max |diff| %.3g); its positions are applied to the given "
            "sigmas. Use EPD Sigmas with this table to sample on the grid it was made for.",
            SAMPLER_NODE,
            run.grid_diff,
        )
    if run.afs_skipped:
        log.info("%s: AFS skipped: the sigmas start at %.4g, below sigma_max (img2img or denoise < 1).",
                 SAMPLER_NODE, float(run.sigmas[0]))  # fmt: skip


def warn_table_options(params: EPDParams, form: str, plugin: bool) -> None:
    """One warning when the sampler's form or plugin setting differs from what the table was made for."""
    made_form, made_sampler = params.metadata.get("form"), params.metadata.get("sampler")
    if made_form not in (None, form):
        log.warning("%s: the table was made for form=%r but sampling uses form=%r.", SAMPLER_NODE, made_form, form)
    used = "epd_plugin" if plugin else "epd"
    if made_sampler in ("epd", "epd_plugin") and made_sampler != used:
        log.warning(
            "%s: the table was made for sampler %r but the plugin setting gives %r.", SAMPLER_NODE, made_sampler, used
        )


def step_callback(callback: Callable | None, total: int, steps: int) -> Callable[[dict[str, Any]], None]:
    """Per-step hook: B-sized progress to ComfyUI, then the interruption check (§3.3).

    When the tail rule shortened the run, the step index is stretched so the progress
    bar, which counts len(sigmas) - 1 steps, still ends at 100 %.
    """

    def report(info: dict[str, Any]) -> None:
        if callback is not None:
            if steps != total:
                info = {**info, "i": math.ceil((info["i"] + 1) * total / steps) - 1}
            callback(info)
        comfy.model_management.throw_exception_if_processing_interrupted()

    return report


@torch.no_grad()
def sample_epd_comfy(
    model: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable | None = None,
    disable: bool | None = None,
    *,
    params: EPDParams | None = None,
    num_points: int = 2,
    form: str = DEFAULT_FORM_CHOICE,
    parallel: str = "auto",
    chunk_size: int = 0,
    afs: str = "auto",
    tail: str = "auto",
    plugin: PluginChoice | bool = AUTO,
    max_order: int = 3,
    rows: list[StepRow] | None = None,
) -> torch.Tensor:
    """Sampler function for comfy.samplers.KSAMPLER: EPD-Solver, or EPD-Plugin (iPNDM jumps up to ``max_order``).

    Options as the EPD Sampler node sets them; ``plugin`` "auto" decides from the table and the model's
    kind (epd_core.plan.resolve_plugin). Every path
    samples here (EPD Sampler, the KSampler entry, RL rollouts), so all get the same
    interrupt, progress, mask and parallel handling. ``rows``: per-image table rows [K, B]
    (RL rollouts draw a table per image) used in place of ``params``' own, on its grid.
    """
    if len(sigmas) < 2:
        return x
    extra_args = {} if extra_args is None else dict(extra_args)
    model_sampling = model_sampling_of(model)
    kind = kind_of(model_sampling)
    if params is not None:
        check_table_fits(params, model_sampling, _model_config_of(model), SAMPLER_NODE)
    try:
        run = plan_run(sigmas, params, num_points=num_points, form=form, tail=tail, afs=afs_choice(afs),
                       sigma_min=float(model_sampling.sigma_min), sigma_max=float(model_sampling.sigma_max),
                       cfg=guider_cfg(model), plugin=plugin, kind=kind)  # fmt: skip
    except ValueError as err:
        raise ValueError(f"{SAMPLER_NODE}: {err}") from err
    report_plan(run, params)
    denoiser, mode = points_denoiser(parallel, model, extra_args, x.shape[0])
    order = max_order if run.plugin else 1  # 1: the plain EPD-Solver's Euler jump
    config = StepConfig(kind, run.form, run.afs, order, mode, chunk_size)
    report = step_callback(callback, len(sigmas) - 1, len(run.sigmas) - 1)
    step_rows = table_rows(run.params) if rows is None else rows
    try:
        return run_rows(denoiser, x, run.sigmas, step_rows, config, extra_args, report)
    except ValueError as err:  # a bad latent or model output (nan, wrong batch): say which node ran it
        raise ValueError(f"{SAMPLER_NODE}: {err}") from err


def make_guider(model_patcher: Any, positive: Any, negative: Any, cfg: float) -> comfy.samplers.CFGGuider:
    """A CFGGuider on the model with these conds: what training and RL rollouts sample through."""
    guider = comfy.samplers.CFGGuider(model_patcher)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider


def make_sampler(**options: Any) -> comfy.samplers.KSAMPLER:
    """The SAMPLER object of EPD Sampler."""
    return comfy.samplers.KSAMPLER(sample_epd_comfy, extra_options=options)


# --- opt-in KSampler dropdown entry (§1.2) -------------------------------------------------------


def sample_epd_ksampler(
    model: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable | None = None,
    disable: bool | None = None,
    **options: Any,
) -> torch.Tensor:
    """The KSampler dropdown's 'epd' (also KSamplerSelect): default table and options.

    KSampler drops the penultimate sigma itself for names in DISCARD_PENULTIMATE_SIGMA_SAMPLERS;
    a scheduler's own [..., sigma_min, 0] tail (SamplerCustom + KSamplerSelect) is dropped by
    the default tail="auto".
    """
    return sample_epd_comfy(model, x, sigmas, extra_args, callback, disable, **options)


sample_epd_ksampler.epd_pack = True  # marks our entry, so a second copy of the pack does not fight over it


def _name_lists() -> list[list[str]]:
    """Every list the sampler dropdowns read (SAMPLER_NAMES and KSampler.SAMPLERS are usually one object)."""
    lists = [comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES]
    samplers = getattr(comfy.samplers.KSampler, "SAMPLERS", None)
    if isinstance(samplers, list) and all(samplers is not names for names in lists):
        lists.append(samplers)
    return lists


def register_ksampler_entry() -> bool:
    """Add 'epd' to the KSampler dropdowns; idempotent, append-only, no reloads. False if skipped."""
    attr = "sample_" + KSAMPLER_ENTRY_NAME
    current = getattr(comfy.k_diffusion.sampling, attr, None)
    if current is not None and not getattr(current, "epd_pack", False):
        log.warning(
            "EPD: another pack already provides sampler %r; the KSampler entry is not added.", KSAMPLER_ENTRY_NAME
        )
        return False
    try:
        lists = _name_lists()
    except AttributeError as err:  # feature probe: this ComfyUI has no sampler name lists
        log.warning("EPD: cannot add the KSampler entry to this ComfyUI (%s); use the EPD Sampler node.", err)
        return False
    if current is None:
        setattr(comfy.k_diffusion.sampling, attr, sample_epd_ksampler)
    for names in lists:
        if KSAMPLER_ENTRY_NAME not in names:
            names.append(KSAMPLER_ENTRY_NAME)
    discard = getattr(comfy.samplers.KSampler, "DISCARD_PENULTIMATE_SIGMA_SAMPLERS", None)
    if isinstance(discard, set):
        discard.add(KSAMPLER_ENTRY_NAME)
    return True
