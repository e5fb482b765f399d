"""Stage 1 on the real Fashion-MNIST denoiser (issue 3): classifier-feature FD at 3 and 5 rounds.

    python -m bench.fmnist.bench_distill [--samples 1000] [--iterations 40] [--out bench/results]

Unconditional sampling (null label) from sigma 80. For each budget R, distils a K = 2
table (direction form, scales within 1 +/- 0.05, AFS, DPM-Solver-2 teacher with
``--substeps`` inserted steps, per-step global loss or ``--targets final``) and reports the Fréchet distance
of the classifier's features of ``--samples`` samples against the 10,000 test images,
for the distilled table, the default table and the epd_core baselines (Euler, Heun,
DPM-Solver-2, iPNDM; ComfyUI's are the same algorithms) on the same noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from epd_core.baselines import run_dpm2, run_euler, run_heun, run_ipndm
from epd_core.demo import karras
from epd_core.distill import DistillConfig, distill
from epd_core.grids import epd_sigmas
from epd_core.schedules import drop_penultimate
from epd_core.solver import StepConfig, run_epd
from epd_core.tables import default_table

from . import data, metrics
from .classifier import DEFAULT_WEIGHTS as CLASSIFIER_WEIGHTS
from .classifier import load_classifier
from .unet import DEFAULT_WEIGHTS, load_denoiser

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
SHAPE = (1, 28, 28)


def baselines(rounds: int) -> dict:
    half = (rounds + 1) // 2
    return {
        "euler": lambda m, x: run_euler(m, x, karras(rounds)),
        "ipndm": lambda m, x: run_ipndm(m, x, karras(rounds)),
        "heun": lambda m, x: run_heun(m, x, karras(half)),
        "dpm_2": lambda m, x: run_dpm2(m, x, drop_penultimate(karras(half + 1))),
    }


def distil(model, rounds: int, args) -> tuple:
    sigmas = epd_sigmas((rounds + 1) // 2, SIGMA_MIN, SIGMA_MAX)
    start = default_table(sigmas, 2, form="direction", afs=True).replace(scale_dir=0.05, scale_time=0.05)
    config = DistillConfig(iterations=args.iterations, batch=8, teacher="dpm_2", inserted=args.substeps,
                           targets=args.targets, bptt=args.targets == "final", eval_every=10, val_batch=16, seed=0)  # fmt: skip

    def noise_fn(batch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn((batch, *SHAPE), generator=gen) * SIGMA_MAX

    started = time.perf_counter()
    *_, last = distill(model, start, noise_fn, config, step_config=StepConfig(form="direction", afs=True))
    return last.best_table, time.perf_counter() - started


def sample_in_chunks(fn, x: torch.Tensor, chunk: int = 250) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(part) for part in x.split(chunk)]).clamp(-1, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--substeps", type=int, default=7)
    p.add_argument("--targets", choices=("global", "local", "final"), default="global")
    p.add_argument("--rounds", type=int, nargs="+", default=[3, 5])
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    denoiser = load_denoiser(DEFAULT_WEIGHTS)
    classifier = load_classifier(CLASSIFIER_WEIGHTS)
    test = data.load_split("test").images
    reference = metrics.feature_stats(metrics.classifier_features(classifier, test))

    def model(x: torch.Tensor, sigma: torch.Tensor, **_) -> torch.Tensor:
        return denoiser(x, sigma)

    x = torch.randn((args.samples, *SHAPE), generator=torch.Generator().manual_seed(1000)) * SIGMA_MAX
    results: dict[str, dict[int, float]] = {}
    out = sys.stdout
    for rounds in args.rounds:
        table, seconds = distil(model, rounds, args)
        out.write(f"R={rounds}: distilled in {seconds:.0f} s\n")
        results.setdefault("distill seconds", {})[rounds] = seconds
        runs = {
            "EPD distilled (direction)": lambda part, t=table: run_epd(model, part, t.sigmas, params=t, form="direction", afs=True),
            "EPD default (direction, Gauss-Legendre)": lambda part, r=rounds: run_epd(
                model, part, epd_sigmas((r + 1) // 2, SIGMA_MIN, SIGMA_MAX), form="direction", afs=True),
            "EPD default (data, uniform)": lambda part, r=rounds: run_epd(
                model, part, epd_sigmas((r + 1) // 2, SIGMA_MIN, SIGMA_MAX), form="data", afs=True),
            **{name: (lambda part, f=fn: f(model, part)) for name, fn in baselines(rounds).items()},
        }  # fmt: skip
        for name, fn in runs.items():
            samples = sample_in_chunks(fn, x)
            fd = metrics.frechet_from_stats(
                metrics.feature_stats(metrics.classifier_features(classifier, samples)), reference
            )
            results.setdefault(name, {})[rounds] = fd
            out.write(f"  {name}: classifier FD {fd:.3f}\n")
            out.flush()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"fmnist_distill_{args.targets}.json").write_text(
        json.dumps({"samples": args.samples, "results": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
