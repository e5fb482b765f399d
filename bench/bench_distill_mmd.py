"""EPD distillation with the pointwise L2 loss vs the patch-MMD loss on the Fashion-MNIST denoiser (issue 16 C).

The same start table (K = 2, direction form, R rounds), teacher (DPM-Solver-2, 7 inserted steps),
noise seed, batch and iterations as bench/fmnist/rows.distil; only DistillConfig.loss differs
("l2" or "mmd", 4x4 patches). Each learned table, and the start table, then samples the same
--samples noises (class j % 10, cfg 1) and is compared with Heun-50 on those noises: the mean L2
error per image (784 pixels), the squared patch MMD (4x4 patches, RBF, median bandwidth) and
the classifier-feature Frechet distance to Heun-50's samples (fd_converged, as in bench_distill).
Usage: python -m bench.bench_distill_mmd [--rounds 3] [--iterations 40] [--samples 200]
(from the repo root, 1 torch thread; writes bench/results/distill_mmd.json).

``--model digits`` runs the same comparison on the exact digits mixture (epd_core.digits, 64-D, cheap on a
loaded CPU): 3-step default grid, batch 32, 40 iterations, 1024 fresh noises; L2 and MMD to the
DPM-Solver-2 (31 inserted steps) solution of the same noises and MMD to exact mixture draws
(bench/results/distill_mmd_digits.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.fmnist.classifier import DEFAULT_WEIGHTS as CLASSIFIER_WEIGHTS
from bench.fmnist.classifier import load_classifier
from bench.fmnist.metrics import classifier_fd
from bench.fmnist.rows import SHAPE, SIGMA_MAX, TEACHER, LabelledModel, noise, start_table
from bench.fmnist.sample import karras_sigmas
from bench.fmnist.unet import DEFAULT_WEIGHTS, load_denoiser
from epd_core.baselines import run_heun
from epd_core.distill import DistillConfig, distill
from epd_core.mmd import patch_mmd2
from epd_core.solver import StepConfig, run_epd

CHUNK = 50  # a multiple of 10 keeps the j % 10 labels aligned


def learn(model: LabelledModel, rounds: int, iterations: int, loss: str):
    """The best table of a distillation run with this loss, and its wall time."""
    start = start_table(rounds).replace(scale_dir=0.05, scale_time=0.05)
    config = DistillConfig(iterations=iterations, batch=10, **TEACHER, targets="global", eval_every=10,
                           val_batch=20, seed=0, loss=loss)  # fmt: skip
    began = time.perf_counter()
    *_, last = distill(model, start, noise, config, step_config=StepConfig(form="direction", afs=True))
    return last.best_table, time.perf_counter() - began


@torch.no_grad()
def in_chunks(fn, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)])


def digits() -> None:
    """The L2 vs MMD comparison on the exact digits mixture."""
    from epd_core.digits import SIGMA_MIN, ExactModel, digits_mixture
    from epd_core.distill.teacher import teacher_trajectory
    from epd_core.grids import epd_sigmas
    from epd_core.mmd import mmd2
    from epd_core.tables import default_table

    mix = digits_mixture()
    model = ExactModel(mix)

    def draw(batch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(batch, 64, generator=gen, dtype=torch.float64) * SIGMA_MAX

    start = default_table(epd_sigmas(3, SIGMA_MIN, SIGMA_MAX), 2, form="direction", afs=True)
    start = start.replace(scale_dir=0.05, scale_time=0.05)
    x, exact = draw(1024, torch.Generator().manual_seed(123)), mix.sample(1024, torch.Generator().manual_seed(5))
    ref = teacher_trajectory(model, x, start.sigmas, teacher="dpm_2", inserted=31)[-1]
    tables, step = {"start (training-free)": (start, 0.0)}, StepConfig(form="direction", afs=True)
    for loss in ("l2", "mmd"):
        config = DistillConfig(iterations=40, batch=32, val_batch=128, teacher="dpm_2", inserted=7, eval_every=5,
                               loss=loss)  # fmt: skip
        began = time.perf_counter()
        *_, last = distill(model, start, draw, config, step_config=step)
        tables[f"distilled, loss={loss}"] = (last.best_table, time.perf_counter() - began)
    rows = []
    for name, (table, seconds) in tables.items():
        out = run_epd(model, x, table.sigmas, params=table, form="direction", afs=True)
        rows.append({"table": name, "train_s": round(seconds, 1),
                     "l2_to_teacher": round(float((out - ref).norm(dim=1).mean()), 4),
                     "mmd2_to_teacher": round(float(mmd2(out, ref)), 5),
                     "mmd2_to_exact": round(float(mmd2(out, exact)), 5)})  # fmt: skip
    setup = {"model": "digits mixture (exact)", "steps": 3, "batch": 32, "iterations": 40, "samples": 1024,
             "teacher": "dpm_2, 7 inserted (training) / 31 (reference)", "torch": torch.__version__}  # fmt: skip
    path = Path(__file__).parent / "results" / "distill_mmd_digits.json"
    path.write_text(json.dumps({"setup": setup, "rows": rows}, indent=1) + "\n")
    for r in rows:
        print(r)  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--model", choices=("fmnist", "digits"), default="fmnist")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.model == "digits":
        digits()
        return
    model = LabelledModel(load_denoiser(DEFAULT_WEIGHTS))
    classifier = load_classifier(CLASSIFIER_WEIGHTS)
    x = torch.randn((args.samples, *SHAPE), generator=torch.Generator().manual_seed(123)) * SIGMA_MAX
    ref = in_chunks(lambda c: run_heun(model, c, karras_sigmas(50)), x).clamp(-1, 1)
    tables = {"start (training-free)": (start_table(args.rounds).replace(scale_dir=0.05, scale_time=0.05), 0.0)}
    for loss in ("l2", "mmd"):
        tables[f"distilled, loss={loss}"] = learn(model, args.rounds, args.iterations, loss)
    rows = []
    for name, (table, seconds) in tables.items():
        run = lambda c, t=table: run_epd(model, c, t.sigmas, params=t, form="direction", afs=True)  # noqa: E731
        out = in_chunks(run, x).clamp(-1, 1)
        rows.append({
            "table": name, "train_s": round(seconds, 1),
            "l2_to_heun50": round(float((out - ref).flatten(1).norm(dim=1).mean()), 4),
            "patch_mmd2_to_heun50": round(float(patch_mmd2(out.double(), ref.double())), 5),
            "fd_converged": round(classifier_fd(classifier, out, ref), 3),
        })  # fmt: skip
    setup = {**vars(args), "teacher": TEACHER, "batch": 10, "targets": "global", "mmd_patch": 4,
             "reference": "Heun 50 steps, Karras grid", "torch": torch.__version__}  # fmt: skip
    out_path = Path(__file__).parent / "results" / "distill_mmd.json"
    out_path.write_text(json.dumps({"setup": setup, "rows": rows}, indent=1) + "\n")
    for r in rows:
        print(r)  # noqa: T201


if __name__ == "__main__":
    main()
