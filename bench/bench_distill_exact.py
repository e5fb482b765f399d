"""Stage 1 on the exact digits mixture (issue 3): distilled EPD vs the built-ins, error vs reference.

    python bench/bench_distill_exact.py [--iterations 100] [--out bench/results]

For each budget R = 3, 5, 7, 9 sequential rounds, distils a K = 2 table (direction
form, learned scales within 1 +/- 0.05, AFS, DPM-Solver-2 teacher with 15 inserted
steps, final-state loss backpropagated through all steps; one variant also learns the grid's
interior sigmas) on training noise, then
measures the error against the converged reference on 64 fresh samples (another seed).
Built-in numbers are read from bench/results/exact.json (bench_exact.py, unconditional).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from epd_core.baselines import run_ipndm  # noqa: E402
from epd_core.demo import karras  # noqa: E402
from epd_core.digits import (  # noqa: E402
    SIGMA_MAX,
    SIGMA_MIN,
    ExactModel,
    digits_mixture,
    reference_solution,
    solution_error,
    start_noise,
)
from epd_core.distill import DistillConfig, distill  # noqa: E402
from epd_core.grids import epd_sigmas  # noqa: E402
from epd_core.solver import StepConfig, run_epd  # noqa: E402
from epd_core.tables import default_table  # noqa: E402

ROUNDS = (3, 5, 7, 9)
VARIANTS = {  # name: (form, max_order, targets, learn_sigmas)
    "EPD distilled (direction, final-state loss)": ("direction", 1, "final", False),
    "EPD distilled (direction, final-state loss, learned sigmas)": ("direction", 1, "final", True),
    "EPD distilled (direction, global per-step loss)": ("direction", 1, "global", False),
    "EPD-Plugin distilled (direction, final-state loss)": ("direction", 3, "final", False),
    "EPD distilled (data, final-state loss)": ("data", 1, "final", False),
}


def distil(model, rounds: int, form: str, max_order: int, targets: str, learn_sigmas: bool, iterations: int):
    sigmas = epd_sigmas((rounds + 1) // 2, SIGMA_MIN, SIGMA_MAX)
    start = default_table(sigmas, 2, form=form, afs=True).replace(scale_dir=0.05, scale_time=0.05)
    config = DistillConfig(iterations=iterations, batch=16, teacher="dpm_2", inserted=15, targets=targets,
                           bptt=targets == "final", eval_every=10, seed=0, learn_sigmas=learn_sigmas)  # fmt: skip

    def noise_fn(batch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(batch, 64, generator=gen, dtype=torch.float64) * SIGMA_MAX

    step = StepConfig(form=form, afs=True, max_order=max_order)
    started = time.perf_counter()
    *_, last = distill(model, start, noise_fn, config, step_config=step)
    return last.best_table, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    mixture = digits_mixture()
    x = start_noise(64, seed=1000)  # not the training seeds
    ref = reference_solution(ExactModel(mixture), x)
    results: dict[str, dict[int, dict[str, float]]] = {}
    for name, (form, max_order, targets, learn_sigmas) in VARIANTS.items():
        for rounds in ROUNDS:
            table, seconds = distil(
                ExactModel(mixture), rounds, form, max_order, targets, learn_sigmas, args.iterations
            )
            model = ExactModel(mixture)
            out = run_epd(model, x, table.sigmas, params=table, form=form, afs=True, max_order=max_order)
            assert model.calls == rounds, (name, rounds, model.calls)
            results.setdefault(name, {})[rounds] = {"error": solution_error(out, ref), "seconds": seconds}
            sys.stdout.write(
                f"{name} R={rounds}: error {results[name][rounds]['error']:.3f} ({seconds:.0f} s to distil)\n"
            )
    for rounds in ROUNDS:  # the same fresh noise through iPNDM, to compare like with like
        results.setdefault("ipndm (same noise, karras with sigma_min, 0)", {})[rounds] = {
            "error": solution_error(run_ipndm(ExactModel(mixture), x, karras(rounds)), ref),
            "seconds": 0.0,
        }
    builtin = json.loads((ROOT / "bench" / "results" / "exact.json").read_text())["settings"]["unconditional"]["rows"]
    lines = ["| solver | " + " | ".join(f"R={r}" for r in ROUNDS) + " |", "|---" * (len(ROUNDS) + 1) + "|"]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[r]['error']:.3f}" for r in ROUNDS) + " |")
    for name in ("EPD (data)", "EPD (direction)", "ipndm", "deis", "gradient_estimation", "dpmpp_2m", "heun", "dpm_2"):
        if name in builtin:
            lines.append(
                f"| {name} (built-in, bench_exact.py batch) | "
                + " | ".join(f"{builtin[name][str(r)]['error']:.3f}" for r in ROUNDS)
                + " |"
            )
    sys.stdout.write("\n".join(lines) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distill_exact.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
