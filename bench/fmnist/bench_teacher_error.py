"""How far EPD Distill's teacher is from the converged run, per family (issue 14: is the teacher the limit?).

The teacher is the one EPD Distill runs: dpm_2 with M sub-steps inserted into every step of the
student's grid (EPD Sigmas' ``auto`` grid, (R + 1) / 2 steps as the distilled rows use). It runs
through the same CFGGuider -> KSAMPLER -> BaseModel path and from the same noise as bench_families'
rows, and is scored with the same RMS to the same converged reference. A student cannot be more
accurate than the teacher it copies, so a teacher error well below the student's says the limit
is elsewhere.

    COMFYUI_PATH=/path/to/ComfyUI python -m bench.fmnist.bench_teacher_error
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from epd_core.distill.teacher import teacher_trajectory

from .bench_families import FamilySetting, comfy_or_exit, rms, write_results


def teacher_sampler(inserted: int):
    """A KSAMPLER function that returns the teacher's final state on the given grid."""

    def run(model, x, sigmas, extra_args=None, callback=None, disable=None, **_):
        with torch.no_grad():
            states = teacher_trajectory(model, x, sigmas.double(), teacher="dpm_2", inserted=inserted,
                                        extra_args=extra_args or {})  # fmt: skip
        return states[-1]

    return run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["edm", "eps", "flow"])
    p.add_argument("--rounds", type=int, nargs="+", default=[3, 5, 9])
    p.add_argument("--inserted", type=int, nargs="+", default=[4, 15], help="teacher sub-steps M")
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--ref-steps", type=int, default=150)
    p.add_argument("--out", type=Path, default=Path("bench/results/families"))
    args = p.parse_args(argv)
    comfy = comfy_or_exit(1)
    results: dict[str, dict[str, float]] = {}
    for family in args.families:
        setting = FamilySetting(family, 1.0, args.batch, 0, comfy)
        ref = setting.reference(args.ref_steps)
        for rounds in args.rounds:
            grid = setting.epd_grid("auto", (rounds + 1) // 2)
            for m in args.inserted:
                x, _ = setting.sample(teacher_sampler(m), {}, grid)
                error = results.setdefault(family, {})[f"R={rounds}, M={m}"] = rms(x, ref)
                print(f"{family} R={rounds} M={m}: teacher RMS {error:.4f}")  # noqa: T201 (the report)
    write_results(args.out, "teacher_error.json", results)


if __name__ == "__main__":
    main()
