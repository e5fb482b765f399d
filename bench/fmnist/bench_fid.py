"""Inception FID on the key rows of the class-conditional Fashion-MNIST benchmark (issue 3).

    python -m bench.fmnist.bench_fid --rounds 3 5

Reads the samples bench_distill saved (``--save``), so every row is scored on exactly the samples
whose classifier FD it reports. Key rows: the distilled EPD and the two
built-ins with the lowest classifier FD at each budget (from ``--results``), or ``--rows``. FID is
against the first ``--reference`` test images, or with ``--against converged`` against the Heun-50
samples bench_distill saved for the same noises (``heun50_first<N>.npy``: the solver's own error,
without the model's); their Inception statistics are cached in ``--save``. About 0.1-0.17 s per
image on 1 CPU thread. Results are merged into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import data, metrics
from .rows import BUILTINS, file_stem

log = logging.getLogger(__name__)


def best_builtins(results: list[Path], rounds: int, count: int = 2, key: str = "fd") -> list[str]:
    """The ``count`` built-ins with the lowest ``key`` (a classifier FD) at ``rounds`` in the result JSONs."""
    scores = {}
    for path in results:
        for name, per_r in json.loads(path.read_text())["rows"].items():
            if name in BUILTINS and key in per_r.get(str(rounds), {}):
                scores[name] = per_r[str(rounds)][key]
    return sorted(scores, key=scores.get)[:count]


def reference_stats(inception, images: Callable[[], torch.Tensor], cache: Path) -> metrics.FeatureStats:
    """Inception statistics of ``images()``, cached as .npz."""
    if cache.is_file():
        return metrics.load_stats(cache)
    stats = metrics.feature_stats(metrics.inception_features(images(), inception))
    metrics.save_stats(cache, stats)
    return stats


def reference(args: argparse.Namespace, inception) -> metrics.FeatureStats:
    """The Inception statistics every row is scored against: test images or the converged samples."""
    if args.against == "test":
        count = args.reference
        return reference_stats(inception, lambda: data.load_split("test").images[:count],
                               args.save / f"inception_test_first{count}.npz")  # fmt: skip
    samples = args.save / f"heun50_first{args.samples}.npy"
    if not samples.is_file():
        raise FileNotFoundError(f"{samples} is missing: run bench_distill with --ref-samples {args.samples} first")
    return reference_stats(inception, lambda: torch.from_numpy(np.load(samples)),
                           args.save / f"inception_heun50_first{args.samples}.npz")  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, nargs="+", default=[3, 5])
    p.add_argument("--rows", nargs="*", default=None, help="row names (default: distilled + two best built-ins)")
    p.add_argument("--samples", type=int, default=2000, help="first N saved samples of each row")
    p.add_argument("--reference", type=int, default=2000, help="first N test images")
    p.add_argument("--against", choices=("test", "converged"), default="test",
                   help="score against test images or the Heun-50 samples of the same noises")  # fmt: skip
    p.add_argument("--results", type=Path, nargs="+", default=None,
                   help="default: fmnist_cond_builtins.json, or fmnist_cond_converged.json with --against converged")  # fmt: skip
    p.add_argument("--save", type=Path, default=Path("bench/out/fmnist_cond"))
    p.add_argument("--out", type=Path, default=None, help="default: fmnist_cond_fid[_converged].json")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    suffix = "" if args.against == "test" else "_converged"
    args.out = args.out or Path(f"bench/results/fmnist_cond_fid{suffix}.json")
    # The built-ins are ranked by the measure of the same reference, which only the converged run records.
    results = "fmnist_cond_builtins.json" if args.against == "test" else "fmnist_cond_converged.json"
    args.results = args.results or [Path("bench/results") / results]
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse(argv)
    torch.set_num_threads(args.threads)
    inception = metrics.load_inception()
    ref = reference(args, inception)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": {}}
    record |= {"samples": args.samples, "against": args.against}
    if args.against == "test":
        record["reference_test_images"] = args.reference
    key = "fd" if args.against == "test" else "fd_converged"
    for rounds in args.rounds:
        names = args.rows or ["EPD distilled", *best_builtins(args.results, rounds, key=key)]
        for name in names:
            started = time.perf_counter()
            samples = torch.from_numpy(np.load(args.save / f"R{rounds}_{file_stem(name)}.npy"))
            feats = metrics.inception_features(samples[: args.samples], inception)
            fid = metrics.frechet_from_stats(metrics.feature_stats(feats), ref)
            record["rows"].setdefault(name, {})[str(rounds)] = fid
            log.info("R=%d %s: Inception FID %.2f (%.0f s)", rounds, name, fid, time.perf_counter() - started)
            args.out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
