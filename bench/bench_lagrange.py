"""Issue 16 A: observed order of the Lagrange collocation sampler against DPM++ 2M, Heun and EPD.

The data is the exact Gaussian mixture fitted to scikit-learn's digits (epd_core.digits, 64-D,
40 components), so every error is the solver's. All solvers run on the same log-uniform grid
sigma 80 -> 0.002 with N intervals (no step to 0, so the order is not masked by one singular
step); the reference is the Lagrange sampler itself with K = 4, R = 6 on 1024 intervals,
checked against 512 intervals. Rows report the mean L2 error, model evaluations (at batch
size B, counting the K points of a batched call) and sequential rounds (model calls).

    python bench/bench_lagrange.py [--quick] [--out bench/results/lagrange.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import torch  # noqa: E402

from epd_core.baselines import run_heun  # noqa: E402
from epd_core.digits import SIGMA_MAX, SIGMA_MIN, ExactModel, digits_mixture, solution_error, start_noise  # noqa: E402
from epd_core.lagrange import sample_lagrange  # noqa: E402
from epd_core.solver import sample_epd  # noqa: E402

BATCH, SEED = 32, 0
LAGRANGE_ROWS = {  # name: (K, R, warm_start)
    "lagrange K1 R1": (1, 1, False),
    "lagrange K2 R2": (2, 2, False),
    "lagrange K2 R3": (2, 3, False),
    "lagrange K3 R3": (3, 3, False),
    "lagrange K4 R5": (4, 5, False),
    "lagrange warm K1 R1": (1, 1, True),
    "lagrange warm K2 R1": (2, 1, True),
    "lagrange warm K3 R1": (3, 1, True),
    "lagrange warm K2 R2": (2, 2, True),
    "lagrange warm K4 R2": (4, 2, True),
}


class Counted:
    """Counts sequential calls (rounds) and evaluations (rows / B)."""

    def __init__(self, model: ExactModel, batch: int) -> None:
        self.model, self.batch, self.rounds, self.evals = model, batch, 0, 0.0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kw: object) -> torch.Tensor:
        self.rounds += 1
        self.evals += x.shape[0] / self.batch
        return self.model(x, sigma, **kw)


def run_dpmpp_2m(model: Callable, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022) in the data form on log sigma, one evaluation per step."""
    old, h_last = None, None
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        denoised = model(x, sigma * x.new_ones(x.shape[0]))
        h = math.log(sigma / sigma_next)
        if old is None:
            d = denoised
        else:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
        x = (sigma_next / sigma) * x - math.expm1(-h) * d
        old, h_last = denoised, h
    return x


def grid(n: int) -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(SIGMA_MAX), math.log(SIGMA_MIN), n + 1, dtype=torch.float64))


def solvers() -> dict[str, Callable]:
    rows: dict[str, Callable] = {
        "dpmpp_2m": run_dpmpp_2m,
        "heun": run_heun,
        "epd K2 (default table, data)": lambda m, x, s: sample_epd(m, x, s, num_points=2, tail="keep"),
    }
    for name, (k, r, warm) in LAGRANGE_ROWS.items():
        rows[name] = lambda m, x, s, k=k, r=r, w=warm: sample_lagrange(m, x, s, order=k, refinements=r, warm_start=w)
    return rows


def slope(cells: list[dict]) -> float | None:
    """Least-squares order: -d log(error) / d log(N) over the cells with error > 1e-11."""
    pts = [(math.log(c["intervals"]), math.log(c["error"])) for c in cells if c["error"] > 1e-11]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    return -sum((a - mx) * (b - my) for a, b in pts) / sum((a - mx) ** 2 for a, _ in pts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="intervals 4-32, a 512-interval reference")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lagrange.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    intervals = [4, 8, 16, 32] if args.quick else [4, 8, 16, 32, 64]
    ref_n = 512 if args.quick else 1024
    mixture, x = digits_mixture(), start_noise(BATCH, SEED)
    t0 = time.time()
    ref = sample_lagrange(ExactModel(mixture), x, grid(ref_n), order=4, refinements=6)
    ref_half = sample_lagrange(ExactModel(mixture), x, grid(ref_n // 2), order=4, refinements=6)
    results: dict = {}
    for name, fn in solvers().items():
        cells = []
        for n in intervals:
            model = Counted(ExactModel(mixture), BATCH)
            out = fn(model, x, grid(n))
            median = float((out - ref).flatten(1).norm(dim=1).median())
            cells.append({"intervals": n, "error": solution_error(out, ref), "median_error": median,
                          "evals": model.evals, "rounds": model.rounds})  # fmt: skip
        results[name] = {"cells": cells, "observed_order": slope(cells[-3:])}
    meta = {
        "data": "digits Gaussian mixture (epd_core.digits), 64-D, exact denoiser, float64",
        "batch": BATCH, "seed": SEED, "grid": f"log-uniform sigma {SIGMA_MAX} -> {SIGMA_MIN}, no step to 0",
        "reference": f"lagrange K4 R6 on {ref_n} intervals", "error": "mean over samples of the L2 distance",
        "median_error": "median over samples (one sample near a mode boundary can dominate the mean)",
        "reference_self_check": solution_error(ref_half, ref), "observed_order": "LSQ slope over the last 3 N",
        "seconds": round(time.time() - t0, 1), "threads": 1,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    for name, row in results.items():
        errs = " ".join(f"{c['error']:.1e}/{c['evals']:.0f}/{c['rounds']}" for c in row["cells"])
        sys.stdout.write(f"{name:30s} order {row['observed_order'] or float('nan'):5.2f}  {errs}\n")
    sys.stdout.write(f"reference self-check {meta['reference_self_check']:.1e}, {meta['seconds']} s\n")


if __name__ == "__main__":
    main()
