"""Headless Stage 1: ``python -m epd_core.distill [options] OUT.safetensors``.

Runs the same loop as the EPD Distill node on the engine's denoiser protocol. The
model is either the built-in exact digits mixture (``--model digits``, needs
scikit-learn) or any callable ``denoise(x, sigma_vec) -> x0`` named as
``--model package.module:attribute`` (a class is instantiated with no arguments),
with ``--shape`` giving one sample's shape and ``--sigma-min/--sigma-max`` its range.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

import torch

from ..grids import epd_sigmas
from ..solver import StepConfig
from ..table_io import save_table
from ..tables import default_table
from ..vocab import DEFAULT_TABLE_FORM, FORMS
from .loop import TARGETS, DistillConfig, distill
from .teacher import TEACHERS


def load_model(spec: str) -> Callable[..., torch.Tensor]:
    """'digits' or 'module:attribute' -> a denoiser callable."""
    if spec == "digits":
        from ..digits import ExactModel, digits_mixture

        return ExactModel(digits_mixture())
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"--model {spec!r}: expected 'digits' or 'package.module:attribute'")
    obj = getattr(importlib.import_module(module_name), attr)
    return obj() if isinstance(obj, type) else obj  # a class is instantiated with no arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m epd_core.distill", description=__doc__.splitlines()[0])
    p.add_argument("out", help="where to write the table (.safetensors)")
    p.add_argument("--model", default="digits", help="'digits' or package.module:attribute")
    p.add_argument("--shape", default="64", help="one sample's shape, e.g. 4,64,64 (digits: 64)")
    p.add_argument("--sigma-min", type=float, default=0.002)
    p.add_argument("--sigma-max", type=float, default=80.0)
    p.add_argument("--kind", choices=("ve", "flow"), default="ve")
    p.add_argument("--steps", type=int, default=3, help="student steps (2 rounds each, 1 on the AFS first step)")
    p.add_argument("--num-points", type=int, default=2)
    p.add_argument("--form", choices=FORMS, default=DEFAULT_TABLE_FORM, help="step form (default: the sampler's)")
    p.add_argument("--schedule", default="time_uniform")
    p.add_argument("--scale-range", type=float, default=0.05, help="learned scales stay within 1 +/- this; 0 = off")
    p.add_argument("--no-afs", action="store_true")
    p.add_argument("--teacher", choices=tuple(TEACHERS), default="dpm_2")
    p.add_argument("--teacher-substeps", type=int, default=15)
    p.add_argument("--targets", choices=TARGETS, default="global")
    p.add_argument("--bptt", action="store_true")
    p.add_argument("--learn-sigmas", action="store_true", help="also learn the grid's interior sigmas")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--lr-min", type=float, default=0.01)
    p.add_argument("--pool", type=int, default=0, help="train on this many fixed noise batches, teacher run once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    model = load_model(args.model)
    sigmas = epd_sigmas(args.steps, args.sigma_min, args.sigma_max, args.schedule)
    start = default_table(sigmas, args.num_points, form=args.form, afs=not args.no_afs)
    if args.scale_range > 0:
        start = start.replace(scale_dir=args.scale_range, scale_time=args.scale_range)
    sigma0 = float(sigmas[0])

    def noise_fn(batch: int, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn((batch, *shape), generator=gen, dtype=torch.float64)
        return z if args.kind == "flow" else z * sigma0

    config = DistillConfig(
        iterations=args.iterations, batch=args.batch, lr=args.lr, lr_min=args.lr_min, teacher=args.teacher,
        inserted=args.teacher_substeps, targets=args.targets, bptt=args.bptt or args.targets == "final",
        learn_scales=args.scale_range > 0, learn_sigmas=args.learn_sigmas, eval_every=max(1, args.iterations // 20), seed=args.seed,
        pool_batches=args.pool,
    )  # fmt: skip
    step_config = StepConfig(kind=args.kind, form=args.form, afs=start.afs)
    stats = None
    for stats in distill(model, start, noise_fn, config, step_config=step_config):
        if stats.iteration % args.log_every == 0 or stats.iteration == config.iterations:
            sys.stdout.write(
                f"iter {stats.iteration:5d}  loss {stats.loss:.5f}  lr {stats.lr:.4f}  best val {stats.best_val_error:.4f}\n"
            )
    meta = {"provenance": "distilled", "teacher": args.teacher, "teacher_substeps": args.teacher_substeps,
            "iterations": args.iterations, "final_loss": stats.loss, "form": args.form, "kind": args.kind,
            "targets": args.targets, "model": args.model, "learn_sigmas": args.learn_sigmas,
            "teacher_pool": args.pool}  # fmt: skip
    path = save_table(stats.best_table.replace(metadata={**dict(stats.best_table.metadata), **meta}), args.out)
    sys.stdout.write(f"best validation error {stats.best_val_error:.4f}; table written to {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
