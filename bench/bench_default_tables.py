"""Training-free tables compared (issue 2): K = 1..4, uniform vs Gauss-Legendre, both forms.

    python bench/bench_default_tables.py

Error against the converged reference on the digits mixture (epd_core.digits), default
grid with AFS, unconditional and at CFG 1/3/7.5 with a different class per sample.
The denoiser is called directly (no ComfyUI needed); about 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import sys

import torch

from epd_core.digits import (
    SIGMA_MAX,
    SIGMA_MIN,
    ExactModel,
    digits_mixture,
    reference_solution,
    solution_error,
    start_noise,
)
from epd_core.grids import epd_sigmas
from epd_core.solver import sample_epd
from epd_core.tables import default_table

ROUNDS = (3, 5, 7, 9)


def row(mixture, classes, cfg: float, num_points: int, kind: str, form: str) -> list[float]:
    x = start_noise(64)
    ref = reference_solution(ExactModel(mixture, classes, cfg), x)
    errors = []
    for rounds in ROUNDS:
        sigmas = epd_sigmas((rounds + 1) // 2, SIGMA_MIN, SIGMA_MAX)
        table = default_table(sigmas, num_points, kind, form=form, afs=True)
        errors.append(
            solution_error(sample_epd(ExactModel(mixture, classes, cfg), x, sigmas, params=table, form=form), ref)
        )
    return errors


def main() -> int:
    mixture = digits_mixture()
    out = sys.stdout
    out.write("| setting | form | K | table | " + " | ".join(f"R={r}" for r in ROUNDS) + " |\n")
    out.write("|---" * (4 + len(ROUNDS)) + "|\n")
    for cfg in (0.0, 1.0, 3.0, 7.5):
        classes = torch.arange(64) % 10 if cfg else None
        setting = f"cfg {cfg:g}" if cfg else "uncond."
        for form in ("data", "direction"):
            for num_points in (1, 2, 3, 4):
                for kind in ("uniform", "gauss_legendre"):
                    errs = row(mixture, classes, cfg or 1.0, num_points, kind, form)
                    out.write(
                        f"| {setting} | {form} | {num_points} | {kind} | "
                        + " | ".join(f"{e:.3f}" for e in errs)
                        + " |\n"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
