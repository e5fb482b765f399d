"""Headless tuning scaling with gloo (issue 18): N = 1 and 2 processes at equal total batch.

    python -m bench.bench_tune [--distill-iterations 12] [--rl-iterations 10]

Runs ``torchrun --nproc_per_node N -m epd_core.tune distill|rl`` on the Fashion-MNIST EDM
UNet (bench/fmnist/weights; the digits mixture when the weights are absent, said in the
output), one CPU thread per process, on 127.0.0.1. Reports per N: the median seconds per
step (iterations without validation), the wall time, the bytes all-reduced per step and
rank 0's validation curve (distill: L2 error to the teacher on a fixed batch that no N trains
on; RL: classifier reward on fixed seeds). The distill tables of every run are also scored on
one common held-out batch, next to a second seed at N = 1 for the seed-to-seed spread.
Writes bench/results/tune_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "bench" / "fmnist" / "weights" / "fmnist_edm.safetensors"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SIGMA_MAX = 80.0


class FmnistUnconditional:
    """The Fashion-MNIST EDM denoiser with the null label (distillation matches the teacher, any class)."""

    def __init__(self) -> None:
        from bench.fmnist.unet import DEFAULT_WEIGHTS, load_denoiser

        self.denoiser = load_denoiser(DEFAULT_WEIGHTS)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_) -> torch.Tensor:
        return self.denoiser(x, sigma)


class FmnistPrompted(FmnistUnconditional):
    """The same denoiser with class ``prompts[i % P]`` on row i (epd_core.tune's RL protocol)."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, prompts: torch.Tensor | None = None, **_) -> torch.Tensor:
        return self.denoiser(x, sigma, labels=prompts.repeat(x.shape[0] // len(prompts)))


class FmnistReward:
    """The project's Fashion-MNIST classifier's probability of the prompt's class (bench/fmnist/bench_rl.py)."""

    def __init__(self) -> None:
        from bench.fmnist.classifier import load_classifier

        self.classifier = load_classifier()

    def __call__(self, images: torch.Tensor, texts) -> torch.Tensor:
        with torch.no_grad():
            probs = self.classifier.probs(images[..., :1].permute(0, 3, 1, 2) * 2 - 1)
        return probs[torch.arange(len(texts)), torch.tensor([CLASS_NAMES.index(t) for t in texts])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setups(fmnist: bool, args) -> dict[str, dict]:
    """The two runs' configs; batch and prompts_per_step are totals over the ranks."""
    distill = {"loop": {"iterations": args.distill_iterations, "batch": 8, "val_batch": 8, "eval_every": 3,
                        "teacher": "dpm_2", "inserted": 1}}  # fmt: skip
    rl = {"loop": {"iterations": args.rl_iterations, "prompts_per_step": 2, "group_size": 4, "minibatch": 4,
                   "eval_every": 2, "eval_per_prompt": 1}}  # fmt: skip
    if fmnist:
        image = {"shape": [1, 28, 28], "form": "direction"}
        distill |= image | {"model": "bench.bench_tune:FmnistUnconditional"}
        rl |= image | {"model": "bench.bench_tune:FmnistPrompted", "reward": "bench.bench_tune:FmnistReward",
                       "texts": list(CLASS_NAMES)}  # fmt: skip
    return {"distill": distill, "rl": rl}


def launch(mode: str, config: dict, procs: int, work: Path, tag: str) -> dict:
    """One torchrun; rank 0's log rows and the wall time."""
    path = work / f"{tag}.json"
    path.write_text(json.dumps({**config, "out": str(work / f"{tag}.safetensors"), "log": str(work / f"{tag}.log")}))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "epd_core.tune", mode, str(path), "--threads", "1"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{tag} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (work / f"{tag}.log.rank0").read_text().splitlines()]
    return {"rows": rows, "wall": wall, "table": work / f"{tag}.safetensors"}


def summary(run: dict, val_key: str) -> dict:
    rows = run["rows"]
    plain = [r["seconds"] for r in rows[1:] if r[val_key] is None]  # the first includes the start's validation
    steps = len(rows)
    return {"seconds_per_step_median": statistics.median(plain) if plain else None,
            "wall_seconds": round(run["wall"], 2), "bytes_all_reduced_per_iteration": rows[-1]["reduced_bytes"] // steps,
            "curve": [[r["iteration"], r[val_key]] for r in rows if r[val_key] is not None]}  # fmt: skip


def heldout_error(table_paths: dict[str, Path], fmnist: bool) -> dict[str, float]:
    """Each distilled table's L2 error to its teacher on one common held-out batch (16 samples)."""
    from epd_core.distill.teacher import teacher_trajectory
    from epd_core.solver import run_epd
    from epd_core.table_io import load_table

    if fmnist:
        model, shape, form = FmnistUnconditional(), (1, 28, 28), "direction"
    else:
        from epd_core.digits import ExactModel, digits_mixture
        from epd_core.vocab import DEFAULT_TABLE_FORM

        model, shape, form = ExactModel(digits_mixture()), (64,), DEFAULT_TABLE_FORM
    x = torch.randn((16, *shape), generator=torch.Generator().manual_seed(10**6), dtype=torch.float64) * SIGMA_MAX
    out = {}
    for name, path in table_paths.items():
        table = load_table(path)
        with torch.no_grad():
            ref = teacher_trajectory(model, x, table.sigmas, teacher="dpm_2", inserted=1)[-1]
            got = run_epd(model, x, table.sigmas, params=table, form=form, afs=table.afs)
        out[name] = (got - ref).flatten(1).norm(dim=1).mean().item()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--distill-iterations", type=int, default=12)
    p.add_argument("--rl-iterations", type=int, default=10)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tune_scaling.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    fmnist = WEIGHTS.is_file()
    configs = setups(fmnist, args)
    result = {"model": "fmnist_edm" if fmnist else "digits mixture (fmnist weights absent)", "backend": "gloo",
              "host": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(), "python": platform.python_version(),
                       "torch": torch.__version__, "threads_per_process": 1},
              "configs": configs}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = {f"distill_n{n}": launch("distill", configs["distill"], n, work, f"distill_n{n}") for n in (1, 2)}
        seed1 = {**configs["distill"], "loop": {**configs["distill"]["loop"], "seed": 1}}
        runs["distill_n1_seed1"] = launch("distill", seed1, 1, work, "distill_n1_seed1")
        for n in (1, 2):
            runs[f"rl_n{n}"] = launch("rl", configs["rl"], n, work, f"rl_n{n}")
        for name, run in runs.items():
            result[name] = summary(run, "val_error" if name.startswith("distill") else "val_reward")
            sys.stdout.write(f"{name}: {json.dumps({k: v for k, v in result[name].items() if k != 'curve'})}\n")
        tables = {name: run["table"] for name, run in runs.items() if name.startswith("distill")}
        result["distill_heldout_error"] = heldout_error(tables, fmnist)
    result["host"]["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=1))
    sys.stdout.write(f"held-out: {result['distill_heldout_error']}\nwritten to {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
