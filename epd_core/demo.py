"""The built-in example: EPD against classic solvers on real digit images, no ComfyUI needed.

    python -m epd_core.demo [--batch 256] [--seed 0] [--out out/demo]

Samples an exact Gaussian-mixture denoiser fitted to scikit-learn's digits with the
default EPD table, EPD-Plugin and Euler / Heun / DPM-Solver-2 / iPNDM at 3, 5, 7
and 9 sequential model rounds, prints the error against a converged reference
solution and writes a PNG grid (one row per solver at 5 rounds, the reference last).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .baselines import run_dpm2, run_euler, run_heun, run_ipndm
from .digits import (
    DIGIT_SHAPE,
    SIGMA_MAX,
    SIGMA_MIN,
    ExactModel,
    digits_mixture,
    reference_solution,
    solution_error,
    start_noise,
)
from .grids import epd_sigmas
from .png import write_png
from .schedules import append_zero, drop_penultimate, get_sigmas_polynomial
from .solver import sample_epd, sample_epd_plugin

ROUNDS = (3, 5, 7, 9)


def karras(steps: int) -> torch.Tensor:
    """ComfyUI's karras scheduler: rho = 7 over the model range, then 0."""
    return append_zero(get_sigmas_polynomial(steps, SIGMA_MIN, SIGMA_MAX))


def solvers() -> dict[str, Callable[[ExactModel, torch.Tensor, int], torch.Tensor]]:
    """name -> fn(model, x, rounds); every entry spends exactly ``rounds`` sequential model calls."""

    # Two-round solvers take (R + 1) / 2 steps: their step to 0 (Heun, DPM-2) or their AFS first step (EPD) costs one round.
    def half(rounds: int) -> int:
        return (rounds + 1) // 2

    return {
        "epd": lambda m, x, r: sample_epd(m, x, epd_sigmas(half(r), SIGMA_MIN, SIGMA_MAX), afs=True),
        "epd_plugin": lambda m, x, r: sample_epd_plugin(m, x, epd_sigmas(half(r), SIGMA_MIN, SIGMA_MAX), afs=True),
        "euler": lambda m, x, r: run_euler(m, x, karras(r)),
        "ipndm": lambda m, x, r: run_ipndm(m, x, karras(r)),
        "heun": lambda m, x, r: run_heun(m, x, karras(half(r))),
        "dpm_2": lambda m, x, r: run_dpm2(m, x, drop_penultimate(karras(half(r) + 1))),
    }


def run_demo(
    batch: int = 256, seed: int = 0
) -> tuple[dict[str, dict[int, float]], dict[str, torch.Tensor], torch.Tensor]:
    """Errors {solver: {rounds: error}}, the 5-round samples per solver, and the reference."""
    mixture = digits_mixture()
    x = start_noise(batch, seed)
    ref = reference_solution(ExactModel(mixture), x)
    errors: dict[str, dict[int, float]] = {}
    samples: dict[str, torch.Tensor] = {}
    for name, fn in solvers().items():
        for rounds in ROUNDS:
            model = ExactModel(mixture)
            out = fn(model, x, rounds)
            if model.calls != rounds:
                raise AssertionError(f"{name} spent {model.calls} model rounds, expected {rounds}")
            errors.setdefault(name, {})[rounds] = solution_error(out, ref)
            if rounds == 5:
                samples[name] = out
    return errors, samples, ref


def format_table(errors: dict[str, dict[int, float]]) -> str:
    """A markdown table of errors, rounds as columns."""
    lines = ["| solver | " + " | ".join(f"{r} rounds" for r in ROUNDS) + " |", "|---" * (len(ROUNDS) + 1) + "|"]
    for name, row in errors.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[r]:.3f}" for r in ROUNDS) + " |")
    return "\n".join(lines)


def image_grid(rows: list[torch.Tensor], columns: int = 12, zoom: int = 4) -> np.ndarray:
    """Tile [N, 64] samples in [-1, 1] as a grayscale image: one row per tensor, 1-pixel grey gaps."""

    def tile(img: torch.Tensor) -> np.ndarray:
        return np.pad((img.reshape(DIGIT_SHAPE).numpy() + 1) / 2, 1, constant_values=0.5)

    grid = np.concatenate([np.concatenate([tile(img) for img in row[:columns]], axis=1) for row in rows], axis=0)
    return np.kron(grid, np.ones((zoom, zoom)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="samples per solver")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for the PNG grid")
    args = parser.parse_args(argv)
    errors, samples, ref = run_demo(args.batch, args.seed)
    sys.stdout.write("Error against the converged reference (mean L2 over 64 pixels; lower is better)\n")
    sys.stdout.write(format_table(errors) + "\n")
    path = args.out / "samples_5_rounds.png"
    write_png(path, image_grid([*samples.values(), ref]))
    sys.stdout.write(f"rows: {', '.join(samples)}, reference -> {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
