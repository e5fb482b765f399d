"""EPD Distill's ``save_memory``: what autograd holds, and the time it costs, on the Fashion-MNIST EDM UNet.

One training iteration of the node's default recipe (final targets, learned sigmas, K = 2, AFS) at
several student step counts, with and without recomputing each step in the backward pass
(``DistillConfig.checkpoint``). "Held" is the bytes of the tensors autograd saves between the forward
and the backward (counted with a saved-tensor hook; a recomputed step's own activations are not held,
they are rebuilt one step at a time in the backward). Time is the median over ``--repeats`` iterations,
the two settings alternating so machine load hits both alike.

    python -m bench.bench_distill_memory --steps 3 5 --batch 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench.fmnist.unet import DEFAULT_WEIGHTS, load_denoiser
from epd_core.distill.loop import DistillConfig, student_losses
from epd_core.distill.teacher import teacher_trajectory
from epd_core.distill.trainable import TrainableTable
from epd_core.schedules import get_sigmas_polynomial
from epd_core.solver import StepConfig
from epd_core.tables import default_table


def held_bytes_and_seconds(denoiser, table, x, target, config: DistillConfig) -> tuple[int, float]:
    """One iteration's forward + backward: autograd's held bytes and the wall seconds."""
    trainable = TrainableTable(table, learn_sigmas=config.learn_sigmas)
    held = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        held.append(t.numel() * t.element_size())
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses, _ = student_losses(denoiser, x, trainable, [target], config, StepConfig(), {})
    torch.stack(losses).sum().backward()
    return sum(held), time.perf_counter() - start


def measure(steps: int, batch: int, repeats: int) -> dict:
    denoiser = load_denoiser(DEFAULT_WEIGHTS).requires_grad_(False)
    grid = torch.cat([get_sigmas_polynomial(steps, 0.002, 80.0)[:-1], torch.zeros(1, dtype=torch.float64)])
    table = default_table(grid, 2, form="data", afs=True).replace(scale_dir=0.05, scale_time=0.05)
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 80.0
    with torch.no_grad():
        target = teacher_trajectory(denoiser, x, grid, teacher="dpm_2", inserted=4)[-1]
    config = DistillConfig(targets="final", learn_sigmas=True)
    rows = {}
    runs = {False: [], True: []}
    for _ in range(repeats):
        for recompute in (False, True):
            runs[recompute].append(
                held_bytes_and_seconds(denoiser, table, x, target, config._replace(checkpoint=recompute))
            )
    for recompute, results in runs.items():
        rows["save_memory" if recompute else "plain"] = {
            "held_MiB": results[0][0] / 2**20,
            "seconds": statistics.median(s for _, s in results),
        }
    return {"steps": steps, "batch": batch, **rows}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[3, 5])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("bench/results/distill_memory.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = [measure(s, args.batch, args.repeats) for s in args.steps]
    for r in results:
        plain, saved = r["plain"], r["save_memory"]
        print(  # noqa: T201 (the report)
            f"steps {r['steps']}: held {plain['held_MiB']:.1f} -> {saved['held_MiB']:.1f} MiB, "
            f"time {plain['seconds']:.2f} -> {saved['seconds']:.2f} s ({saved['seconds'] / plain['seconds']:.2f}x)"
        )
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
