"""Rows of the exact-denoiser benchmark (issue 2): every solver at R sequential model rounds.

A row is a function ``(R, setting) -> (x_out, Counter)``. EPD rows sample on the default
EPD grid (epd_sigmas, S = (R + 1) / 2 steps, AFS on, K = 2, default uniform table), so a
run spends 2S - 1 = R rounds and 3S - 1 point evaluations. ComfyUI's built-ins get the
karras grid the way KSampler builds it for that round budget (see ``builtin_grid``).
The ``Counter`` wraps the denoiser each solver sees and counts rounds (calls) and point
evaluations (rows / batch: an EPD call over K*B rows is K evaluations).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from epd_core.baselines import run_dpm2, run_euler, run_heun, run_ipndm
from epd_core.demo import karras
from epd_core.digits import SIGMA_MAX, SIGMA_MIN
from epd_core.grids import epd_sigmas
from epd_core.schedules import drop_penultimate
from epd_core.solver import sample_epd, sample_epd_plugin
from epd_core.tables import default_table

BUILTINS = (
    "euler",
    "heun",
    "dpm_2",
    "dpmpp_2m",
    "ipndm",
    "ipndm_v",
    "deis",
    "uni_pc",
    "res_multistep",
    "gradient_estimation",
)
CORE_BASELINES = {"euler": run_euler, "heun": run_heun, "dpm_2": run_dpm2, "ipndm": run_ipndm}
EPD_ROWS = {"EPD (data)": ("data", False), "EPD (direction)": ("direction", False), "EPD-Plugin (data)": ("data", True)}
# Extra rows: a built-in on a different grid. Heun on KSampler's grid spends its last round
# on the tiny [sigma_min, 0] step; with the penultimate sigma dropped (as KSampler does for
# dpm_2) that round goes to the image instead.
VARIANTS = {"heun (penultimate dropped)": "heun"}


class Counted:
    """A denoiser proxy that counts calls; attribute access (inner_model, ...) passes through."""

    def __init__(self, model: Callable[..., torch.Tensor], counter: Counter) -> None:
        self._model, self._counter = model, counter

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._counter.rounds += 1
        self._counter.evals += x.shape[0] / self._counter.batch
        return self._model(x, sigma, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


@dataclass
class Counter:
    """Sequential model rounds and point evaluations (counting K) of one solver run."""

    batch: int
    rounds: int = 0
    evals: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def wrap(self, model: Callable[..., torch.Tensor]) -> Counted:
        return Counted(model, self)


def counting(fn: Callable[..., torch.Tensor], counter: Counter) -> Callable[..., torch.Tensor]:
    """A KSAMPLER sampler function that hands ``fn`` a counted model."""

    def run(model: Any, x: torch.Tensor, sigmas: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return fn(counter.wrap(model), x, sigmas, *args, **kwargs)

    return run


def steps_for(rounds: int) -> int:
    """Steps of a two-round-per-step solver (EPD with AFS, Heun, DPM-2) for an odd round budget."""
    if rounds < 1 or rounds % 2 == 0:
        raise ValueError(f"rounds={rounds} must be odd and positive (3, 5, 7, 9): S = (R + 1) / 2 steps")
    return (rounds + 1) // 2


def core_karras(n: int) -> torch.Tensor:
    """ComfyUI's karras scheduler (rho = 7) without ComfyUI: n steps, n + 1 sigmas ending in 0."""
    return karras(n)


def builtin_grid(name: str, rounds: int, karras: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """The karras grid KSampler would use so that ``name`` spends ``rounds`` rounds.

    One-eval samplers: R steps. heun: S steps (its last step, to 0, is Euler: 2S - 1 rounds).
    dpm_2: S + 1 steps with the penultimate sigma dropped, as KSampler does.
    uni_pc: R + 1 steps with the penultimate dropped (KSampler's rule for it; its rounds are counted).
    """
    steps = steps_for(rounds)
    if name == "heun":
        return karras(steps)
    if name in ("dpm_2", "heun (penultimate dropped)"):
        return drop_penultimate(karras(steps + 1))
    if name == "uni_pc":
        return drop_penultimate(karras(rounds + 1))
    return karras(rounds)


def epd_grid_and_table(rounds: int, form: str) -> tuple[torch.Tensor, Any]:
    """Default EPD grid for R rounds and its default K = 2 table with AFS."""
    grid = epd_sigmas(steps_for(rounds), SIGMA_MIN, SIGMA_MAX)
    return grid, default_table(grid, 2, form=form, afs=True)


# --- setting 1: the k-diffusion denoiser contract, called directly ------------------------------


def direct_epd(name: str) -> Callable[[int, Any], tuple[torch.Tensor, Counter]]:
    """An EPD row on a plain denoiser (``setting.make()`` gives a fresh model, ``setting.x`` the start)."""
    form, plugin = EPD_ROWS[name]
    solver = sample_epd_plugin if plugin else sample_epd

    def run(rounds: int, setting: Any) -> tuple[torch.Tensor, Counter]:
        grid, table = epd_grid_and_table(rounds, form)
        counter = Counter(setting.batch)
        out = solver(
            counter.wrap(setting.make()), setting.x.clone(), grid, params=table, form=form, kind="ve", tail="keep"
        )
        return out, counter

    return run


def direct_core(name: str) -> Callable[[int, Any], tuple[torch.Tensor, Counter]]:
    """An epd_core.baselines row (the bench without ComfyUI) on the same karras grids."""

    def run(rounds: int, setting: Any) -> tuple[torch.Tensor, Counter]:
        counter = Counter(setting.batch)
        solver = CORE_BASELINES[VARIANTS.get(name, name)]
        out = solver(counter.wrap(setting.make()), setting.x.clone(), builtin_grid(name, rounds, core_karras))
        return out, counter

    return run


def direct_builtin(name: str, comfy: Any) -> Callable[[int, Any], tuple[torch.Tensor, Counter]]:
    """A ComfyUI k-diffusion sampler called directly (uni_pc runs in float32, as ComfyUI's code needs)."""

    def run(rounds: int, setting: Any) -> tuple[torch.Tensor, Counter]:
        sigmas = builtin_grid(name, rounds, setting.karras)
        counter = Counter(setting.batch)
        model = counter.wrap(setting.make())
        if name == "uni_pc":
            out = comfy.uni_pc.sample_unipc(model, setting.x.float(), sigmas.float(), extra_args={}, disable=True)
            return out.double(), counter
        return getattr(comfy.kd, "sample_" + VARIANTS.get(name, name))(
            model, setting.x.clone(), sigmas, disable=True
        ), counter

    return run


# --- setting 2: through ComfyUI's CFGGuider and a real MODEL -----------------------------------


def guided_epd(name: str, comfy: Any, bridge: Callable | None) -> Callable[[int, Any], tuple[torch.Tensor, Counter]]:
    """An EPD row as a KSAMPLER: the pack's bridge function when importable, else the engine."""
    form, plugin = EPD_ROWS[name]

    def run(rounds: int, setting: Any) -> tuple[torch.Tensor, Counter]:
        grid, table = epd_grid_and_table(rounds, form)
        if bridge is not None:
            fn, options = (
                bridge,
                {
                    "num_points": 2,
                    "form": form,
                    "afs": "on",
                    "tail": "keep",
                    "parallel": "batched",
                    "plugin": "on" if plugin else "off",
                    "max_order": 3,
                },
            )
        else:
            fn, options = (
                (sample_epd_plugin if plugin else sample_epd),
                {"params": table, "form": form, "kind": "ve", "tail": "keep"},
            )
        counter = Counter(setting.batch)
        return setting.sample(comfy.samplers.KSAMPLER(counting(fn, counter), extra_options=options), grid), counter

    return run


def guided_builtin(name: str, comfy: Any) -> Callable[[int, Any], tuple[torch.Tensor, Counter]]:
    """ComfyUI's own sampler object (sampler_object(name)) through the guider."""

    def run(rounds: int, setting: Any) -> tuple[torch.Tensor, Counter]:
        base = comfy.samplers.sampler_object(VARIANTS.get(name, name))
        counter = Counter(setting.batch)
        sampler = comfy.samplers.KSAMPLER(
            counting(base.sampler_function, counter), base.extra_options, base.inpaint_options
        )
        return setting.sample(sampler, builtin_grid(name, rounds, setting.karras)), counter

    return run


def direct_rows(comfy: Any | None) -> dict[str, Callable]:
    """Setting-1 rows: EPD plus ComfyUI's built-ins, or epd_core's baselines without ComfyUI."""
    rows: dict[str, Callable] = {name: direct_epd(name) for name in EPD_ROWS}
    if comfy is None:
        rows.update({f"{name} (epd_core)": direct_core(name) for name in tuple(CORE_BASELINES) + tuple(VARIANTS)})
    else:
        rows.update({name: direct_builtin(name, comfy) for name in BUILTINS + tuple(VARIANTS)})
    return rows


def guided_rows(comfy: Any, bridge: Callable | None) -> dict[str, Callable]:
    """Setting-2 rows: EPD through the bridge (or engine) and ComfyUI's sampler objects."""
    rows: dict[str, Callable] = {name: guided_epd(name, comfy, bridge) for name in EPD_ROWS}
    rows.update({name: guided_builtin(name, comfy) for name in BUILTINS + tuple(VARIANTS)})
    return rows
