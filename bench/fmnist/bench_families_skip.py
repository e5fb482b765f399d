"""Issue 16 B: skip the middle per model family, through ComfyUI's real stack (bench_families' setting).

For one family at cfg 1: the model's own converged samples (EPD K = 1 on ``--ref-steps`` sigmas) are
the data. Per class, the pack's EPD Fit Start Distribution function (nodes/comfy/skip.py ``fit``)
fits a diagonal or low-rank model to ``--fit-per-class`` of them at sigma*, ``start_latent`` draws the
start, and ``truncated`` cuts a scheduler's SIGMAS to start there; noise is disabled, as with
DisableNoise. At equal model calls n the same built-in (``--sampler`` on ``--scheduler``) runs from
the full horizon (sigma_max, the family's usual noise) and from each fitted start.

Distances to a separate set of converged samples (other noise, same classes b % 10), on pixels:
sliced Wasserstein-2 (512 random directions), MMD^2 (RBF, bandwidth fixed from the converged sets)
and the classifier-feature Frechet distance (bench/fmnist/classifier); the floor row compares two
converged sets of the same size.

    COMFYUI_PATH=/opt/comfy/ComfyUI python -m bench.fmnist.bench_families_skip --family edm --threads 1
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch

from bench.exact_runs import Counter, counting
from bench.fmnist.bench_families import WEIGHTS, FamilySetting, comfy_or_exit, load_pack, write_results

log = logging.getLogger(__name__)
CLASSES = 10
SIGMA_STARS_VE = (1.0, 2.5, 5.0)  # VE sigma*; a flow model's t* = s / (1 + s)
FITS = ("diagonal", "lowrank")


def sliced_w2(a: torch.Tensor, b: torch.Tensor, directions: int = 512, seed: int = 0) -> float:
    """Sliced Wasserstein-2 between equal-size row sets a, b [N, D]: RMS over random unit directions."""
    dirs = torch.randn(a.shape[1], directions, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, pb = (a.double() @ dirs).sort(dim=0).values, (b.double() @ dirs).sort(dim=0).values
    return float(((pa - pb) ** 2).mean().sqrt())


class Distances:
    """SW2, MMD^2 and classifier FD of a sample set to the converged target set."""

    def __init__(self, target: torch.Tensor, floor_set: torch.Tensor) -> None:
        from epd_core.mmd import median_bandwidth

        from .classifier import load_classifier

        self.target, self.bandwidth = target, median_bandwidth(target.double(), floor_set.double())
        self.classifier = load_classifier(WEIGHTS / "fmnist_classifier.safetensors")

    def __call__(self, x: torch.Tensor) -> dict[str, float]:
        from epd_core.mmd import mmd2

        from .metrics import classifier_fd

        images = x.float().reshape(-1, 1, 28, 28)
        target = self.target.float().reshape(-1, 1, 28, 28)
        return {
            "sw2": sliced_w2(x, self.target),
            "mmd2": float(mmd2(x.double(), self.target.double(), bandwidth=self.bandwidth)),
            "classifier_fd": classifier_fd(self.classifier, images, target),
        }


def model_sigma(sigma_ve: float, family: str) -> float:
    return sigma_ve / (1.0 + sigma_ve) if family == "flow" else sigma_ve


def fitted_start(setting: FamilySetting, own: torch.Tensor, sigma: float, fit: str, seed: int) -> tuple[Any, Any]:
    """(start LATENT samples [B, 1, 28, 28] with class b % 10 in row b, one FittedStart) from per-class fits."""
    from comfyui_epd.nodes.comfy import skip

    batch = setting.batch
    start = torch.zeros(batch, 1, 28, 28)
    fitted = None
    for c in range(CLASSES):
        latents = {"samples": own[c::CLASSES].reshape(-1, 1, 28, 28).float()}
        fitted = skip.fit(setting.patcher, latents, sigma, fit, rank=8, seed=seed)
        rows = len(range(c, batch, CLASSES))
        start[c::CLASSES] = skip.start_latent(setting.patcher, fitted, rows, seed + c)["samples"]
    return start, fitted


def truncated_grid(setting: FamilySetting, fitted: Any, scheduler: str, calls: int) -> torch.Tensor:
    """The scheduler's SIGMAS cut at sigma* by EPD Truncate Sigmas, with the step count that leaves ``calls``."""
    from comfyui_epd.nodes.comfy import skip

    for steps in range(calls, 50 * calls):
        sigmas = setting.comfy.samplers.calculate_sigmas(setting.model_sampling, scheduler, steps)
        cut = skip.truncated(sigmas, fitted)
        if len(cut) - 1 >= calls:
            return cut
    raise ValueError(f"no {scheduler} grid leaves {calls} steps below sigma* = {fitted.sigma}")


def from_start(setting: FamilySetting, start: torch.Tensor, sigmas: torch.Tensor, sampler: str) -> tuple:
    """Sample from a start LATENT with noise disabled (SamplerCustomAdvanced + DisableNoise)."""
    counter = Counter(setting.batch)
    base = setting.comfy.samplers.sampler_object(sampler)
    ksampler = setting.comfy.samplers.KSAMPLER(counting(base.sampler_function, counter), dict(base.extra_options))
    out = setting.guider.sample(torch.zeros_like(start), start, ksampler, sigmas.float(), disable_pbar=True,
                                seed=setting.seed)  # fmt: skip
    return out.double().reshape(setting.batch, -1), counter


def converged(args: argparse.Namespace, comfy: Any, batch: int, seed: int) -> torch.Tensor:
    return FamilySetting(args.family, 1.0, batch, seed, comfy).reference(args.ref_steps)


def run_family(args: argparse.Namespace, comfy: Any) -> dict[str, Any]:
    start_time = time.monotonic()
    load_pack()
    own = converged(args, comfy, CLASSES * args.fit_per_class, args.seed + 1)
    target = converged(args, comfy, args.batch, args.seed + 2)
    log.info("converged sets done: %.0f s", time.monotonic() - start_time)
    distance = Distances(target, own[: args.batch])
    setting = FamilySetting(args.family, 1.0, args.batch, args.seed, comfy)
    rows = [{"start": "converged samples (floor)"} | distance(own[: args.batch])]
    for calls in args.calls:
        x, counter = setting.builtin(args.sampler, args.scheduler, calls)
        rows.append({"start": "full horizon", "calls": counter.rounds} | distance(x))
        for sigma_ve in SIGMA_STARS_VE:
            sigma = model_sigma(sigma_ve, args.family)
            for fit in FITS:
                start, fitted = fitted_start(setting, own, sigma, fit, args.seed)
                x, counter = from_start(setting, start, truncated_grid(setting, fitted, args.scheduler, calls),
                                        args.sampler)  # fmt: skip
                row = {"start": f"fitted {fit}", "sigma_star": sigma, "sigma_star_ve": sigma_ve}
                rows.append(row | {"calls": counter.rounds} | distance(x))
        log.info("%d calls done: %.0f s", calls, time.monotonic() - start_time)
    return {"family": args.family, "batch": args.batch, "fit_per_class": args.fit_per_class, "seed": args.seed,
            "ref_steps": args.ref_steps, "sampler": args.sampler, "scheduler": args.scheduler, "rows": rows,
            "seconds": round(time.monotonic() - start_time)}  # fmt: skip


def summary(results: dict[str, Any]) -> str:
    lines = [f"## {results['family']} ({results['sampler']} / {results['scheduler']})", "",
             "| start | sigma* | calls | SW2 | MMD^2 | classifier FD |", "|---|---|---|---|---|---|"]  # fmt: skip
    for row in results["rows"]:
        lines.append(f"| {row['start']} | {row.get('sigma_star', '-')} | {row.get('calls', '-')} | {row['sw2']:.4f} "
                     f"| {row['mmd2']:.2e} | {row['classifier_fd']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=("edm", "eps", "flow"), required=True)
    p.add_argument("--calls", type=int, nargs="+", default=[4, 8], help="model calls per run")
    p.add_argument("--sampler", default="dpmpp_2m", help="a ComfyUI built-in with one call per step")
    p.add_argument("--scheduler", default="karras")
    p.add_argument("--batch", type=int, default=200, help="generated samples (class b % 10)")
    p.add_argument("--fit-per-class", type=int, default=30, help="the model's own samples per class for the fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-steps", type=int, default=60, help="steps of the converged samples")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/results/families"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    comfy = comfy_or_exit(args.threads)
    results = run_family(args, comfy)
    path = write_results(args.out, f"skip_{args.family}.json", results)
    print(summary(results))  # noqa: T201 (the report)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
