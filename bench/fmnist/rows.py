"""Solvers of the class-conditional Fashion-MNIST benchmark (issue 3), each at R sequential model rounds.

Every row is ``fn(model, x) -> x0`` for a ``LabelledModel``. Labels are not passed in: the model
gives row j of every call the class j % 10. That is right for all solvers here because every batch
is a multiple of 10 samples and EPD stacks its K points K-major (rows k*B + b, epd_core/points.py),
so row k*B + b gets (k*B + b) % 10 = b % 10, the label of sample b. ``check_alignment`` verifies it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from bench.exact_runs import builtin_grid, steps_for
from bench.exact_setup import with_model_sampling
from epd_core.baselines import run_dpm2, run_euler, run_heun, run_ipndm
from epd_core.demo import karras
from epd_core.distill import DistillConfig, TeacherPool, distill, make_pool
from epd_core.grids import epd_sigmas
from epd_core.params import EPDParams
from epd_core.solver import StepConfig, run_epd
from epd_core.tables import default_table

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
SHAPE = (1, 28, 28)
CLASSES = 10
# ComfyUI's deterministic built-ins the issue names, plus dpm_2 (the best built-in of the old run).
BUILTINS = ("euler", "heun", "dpm_2", "dpmpp_2m", "ipndm", "ipndm_v", "deis", "uni_pc")
CORE = {"euler": run_euler, "heun": run_heun, "dpm_2": run_dpm2, "ipndm": run_ipndm}
Row = Callable[[Any, torch.Tensor], torch.Tensor]


class LabelledModel:
    """The denoiser with label j % 10 on row j of every call; counts calls (sequential rounds)."""

    def __init__(self, denoiser: Callable[..., torch.Tensor]) -> None:
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, *_: Any, **__: Any) -> torch.Tensor:
        if x.shape[0] % CLASSES:
            # With B not a multiple of 10 a K-major stack would shift every point's label.
            raise ValueError(f"batch of {x.shape[0]} rows is not a multiple of {CLASSES}: labels would misalign")
        self.calls += 1
        return self.denoiser(x, sigma, labels=torch.arange(x.shape[0]) % CLASSES)


def builtin_rows(rounds: int, comfy: Any | None) -> dict[str, Row]:
    """ComfyUI's samplers called directly (karras grids as KSampler builds them), else epd_core's."""
    rows: dict[str, Row] = {}
    for name in BUILTINS:
        if comfy is None and name not in CORE:
            continue
        rows[name] = _comfy_row(name, rounds, comfy) if comfy is not None else _core_row(name, rounds)
    return rows


def _core_row(name: str, rounds: int) -> Row:
    return lambda model, x: CORE[name](model, x, builtin_grid(name, rounds, karras))


def _comfy_row(name: str, rounds: int, comfy: Any) -> Row:
    def run(model: Any, x: torch.Tensor) -> torch.Tensor:
        sigmas = builtin_grid(name, rounds, karras).float()
        model = with_model_sampling(model, comfy)
        if name == "uni_pc":
            return comfy.uni_pc.sample_unipc(model, x, sigmas, extra_args={}, disable=True)
        return getattr(comfy.kd, "sample_" + name)(model, x, sigmas, disable=True)

    return run


def file_stem(name: str) -> str:
    """A row name as a file name part: "EPD distilled, learned sigmas" -> "EPD_distilled_learned_sigmas"."""
    return name.replace(",", "").replace(" ", "_")


def epd_row(table: EPDParams, max_order: int = 1) -> Row:
    """EPD (max_order 1) or EPD-Plugin (max_order 3) in the direction form with AFS on ``table``'s grid."""
    return lambda model, x: run_epd(
        model, x, table.sigmas, params=table, form="direction", afs=True, max_order=max_order
    )


def start_table(rounds: int) -> EPDParams:
    """The default K = 2 direction-form table (Gauss-Legendre) on the default grid for R rounds."""
    grid = epd_sigmas(steps_for(rounds), SIGMA_MIN, SIGMA_MAX)
    return default_table(grid, 2, form="direction", afs=True)


TEACHER = {"teacher": "dpm_2", "inserted": 7}  # every distillation's teacher: DPM-Solver-2, M = 7


def noise(batch: int, gen: torch.Generator) -> torch.Tensor:
    """Start noise at SIGMA_MAX for ``batch`` samples."""
    return torch.randn((batch, *SHAPE), generator=gen) * SIGMA_MAX


def teacher_pool(model: Any, rounds: int, batches: int, seed: int = 0) -> TeacherPool:
    """``batches`` batches of 10 noises and their teacher's final states on the default R-round grid."""
    gen = torch.Generator().manual_seed(seed)
    return make_pool(model, noise, batches, 10, start_table(rounds).sigmas, gen, **TEACHER)


class FeatureLoss(NamedTuple):
    """A final-step feature loss for ``distil``: alpha * MSE(feature_fn(student), feature_fn(teacher))."""

    feature_fn: Callable[[torch.Tensor], torch.Tensor]
    weight: float


def distil(
    model: Any,
    rounds: int,
    targets: str,
    iterations: int,
    max_order: int = 1,
    learn_sigmas: bool = False,
    *,
    start: EPDParams | None = None,
    lr: float = 0.2,
    feature: FeatureLoss | None = None,
    pool: TeacherPool | None = None,
) -> tuple[EPDParams, float, float]:
    """Distil the R-round table (scales within 1 +/- 0.05, DPM-Solver-2 teacher with 7 inserted steps).

    ``start`` (default ``start_table``) lets a feature loss refine a pixel-distilled table; ``pool``
    (``teacher_pool``) trains on fixed noise whose teacher ran once instead of fresh noise.
    Batch 10 and validation batch 20 keep LabelledModel's j % 10 labels aligned (see module doc);
    with a feature loss the validation batch is 40 (the objective is noisier). Returns the best
    table on the validation batch, the wall time and the process CPU time in seconds (on a shared
    machine the CPU time of this 1-thread process is the unshared wall time).
    """
    start = start or start_table(rounds).replace(scale_dir=0.05, scale_time=0.05)
    config = DistillConfig(iterations=iterations, batch=10, **TEACHER, targets=targets,
                           bptt=targets == "final", eval_every=5 if feature else 10, val_batch=40 if feature else 20,
                           seed=3 if feature else 0,  # a refinement validates (and draws noise) apart from the pixel stage
                           learn_sigmas=learn_sigmas, lr=lr,
                           feature_weight=feature.weight if feature else 0.0)  # fmt: skip
    step = StepConfig(form="direction", afs=True, max_order=max_order)
    started, cpu = time.perf_counter(), time.process_time()
    feature_fn = feature.feature_fn if feature else None
    *_, last = distill(model, start, noise, config, step_config=step, feature_fn=feature_fn, pool=pool)
    return last.best_table, time.perf_counter() - started, time.process_time() - cpu


def check_alignment(model: LabelledModel, table: EPDParams, batch: int = 20) -> float:
    """Max |batched - sequential| of an EPD run: equal only if every K-major row keeps its label."""
    x = torch.randn((batch, *SHAPE), generator=torch.Generator().manual_seed(7)) * SIGMA_MAX
    with torch.no_grad():
        runs = [run_epd(model, x, table.sigmas, params=table, form="direction", afs=True, parallel=mode)
                for mode in ("batched", "sequential")]  # fmt: skip
    gap = (runs[0] - runs[1]).abs().max().item()
    if gap > 1e-3:
        raise AssertionError(f"batched and sequential EPD differ by {gap:.3g}: labels misaligned")
    return gap
