"""Skip the middle on exact mixtures (issue 16 B): fitted start at sigma* vs full horizon, at equal model calls.

Two targets with an exact denoiser (epd_core/mixture.py): the digits mixture (40 components, 64-d) and a
heavy-tailed one (student_t_mixture: 4 Student-t(3) centres in 16-d as Gaussian scale mixtures). At
each NFE (one DDIM-type exponential-integrator step per call, EPD K=1 data form, log-spaced sigmas
ending at 0.002 then 0) the same solver starts from N(0, 80^2 I) at sigma_max, from the exact noised
distribution at sigma* (the oracle: only the solver's error is left), or from a start model fitted to
N_FIT exact samples at sigma*: full Gaussian, diagonal GMM, PPCA low rank, and the normalizing flow on
the same principal directions (at each of ``--flow-steps``). The start draws' own distances to exact
noised samples at sigma* are recorded too (start_*). Distances of N_OUT samples to N_OUT exact samples: sliced Wasserstein-2
(512 directions), MMD^2 (RBF, median bandwidth of two exact sets, unbiased), the mean gap of the 0.5 %
and 99.5 % quantiles over the same directions (tails), and for the digits the Frechet distance.
The floor row compares two exact sets.
The dip-test sigma* suggestion (EPD Suggest Sigma*'s function) on 300 of the fit samples is recorded.
Usage: python -m bench.bench_skip [--mixture digits heavy] [--flow-steps 300 1000]
(repo root; writes bench/results/skip_<mixture>.json).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from epd_core.digits import SIGMA_MAX, SIGMA_MIN, ExactModel, digits_mixture
from epd_core.mixture import GaussianMixture, student_t_mixture
from epd_core.mmd import median_bandwidth, mmd2
from epd_core.skip import fit_start, sample_start, suggest_sigma_star
from epd_core.solver import sample_epd

N_OUT, N_FIT = 2000, 1000
NFES = (4, 8, 16)
SIGMA_STARS = (1.0, 2.5, 5.0)
DIRECTIONS = 512
TAIL = 0.005


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(Ca + Cb - 2 (Ca^1/2 Cb Ca^1/2)^1/2)."""
    ma, mb, ca, cb = a.mean(0), b.mean(0), torch.cov(a.T), torch.cov(b.T)
    va, qa = torch.linalg.eigh(ca)
    root = qa @ torch.diag(va.clamp_min(0).sqrt()) @ qa.T
    cross = torch.linalg.eigvalsh(root @ cb @ root).clamp_min(0).sqrt().sum()
    return ((ma - mb) ** 2).sum().item() + (ca.trace() + cb.trace() - 2 * cross).item()


class Distances:
    """SW2, MMD^2, tail-quantile gap (and FD) of a set [N_OUT, D] to the exact target set."""

    def __init__(self, target: torch.Tensor, other: torch.Tensor, with_fd: bool) -> None:
        gen = torch.Generator().manual_seed(123)
        dirs = torch.randn(target.shape[1], DIRECTIONS, generator=gen, dtype=torch.float64)
        self.dirs = dirs / dirs.norm(dim=0, keepdim=True)
        self.target, self.with_fd = target, with_fd
        self.bandwidth = median_bandwidth(target, other)
        self.sorted = (target @ self.dirs).sort(dim=0).values

    def __call__(self, x: torch.Tensor) -> dict[str, float]:
        proj = (x @ self.dirs).sort(dim=0).values
        q = torch.tensor([TAIL, 1 - TAIL], dtype=torch.float64)
        tails = (torch.quantile(proj, q, dim=0) - torch.quantile(self.sorted, q, dim=0)).abs().mean()
        out = {"sw2": float(((proj - self.sorted) ** 2).mean().sqrt()),
               "mmd2": float(mmd2(x, self.target, bandwidth=self.bandwidth)), "tail_gap": float(tails)}  # fmt: skip
        return out | ({"fd": frechet(x, self.target)} if self.with_fd else {})


def grid(top: float, steps: int) -> torch.Tensor:
    s = torch.exp(torch.linspace(math.log(top), math.log(SIGMA_MIN), steps, dtype=torch.float64))
    return torch.cat([s, s.new_zeros(1)])


def run(model: ExactModel, x: torch.Tensor, top: float, nfe: int) -> torch.Tensor:
    return sample_epd(model, x, grid(top, nfe), num_points=1, form="data", tail="keep")


def setup(name: str) -> tuple[GaussianMixture, dict]:
    """The mixture and the fit options: the flow and the low rank on the same principal directions."""
    if name == "digits":
        return digits_mixture(), {"components": 10, "rank": 32}
    return student_t_mixture(), {"components": 4, "rank": 16}


def noised(mix: GaussianMixture, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """N_OUT exact draws of the noised distribution at sigma."""
    return mix.sample(N_OUT, gen) + sigma * torch.randn(N_OUT, mix.dim, generator=gen, dtype=torch.float64)


def starts(fit_data: torch.Tensor, sigma: float, options: dict, flow_steps: list[int], gen: torch.Generator) -> dict:
    """Start states [N_OUT, D] at sigma* per fitted start, with each fit's wall time."""
    fits = [(f"fitted {family}", family, {}) for family in ("gaussian", "gmm", "lowrank")]
    fits += [(f"fitted normalizing_flow {n} steps", "normalizing_flow", {"steps": n}) for n in flow_steps]
    out = {}
    for name, family, extra in fits:
        begin = time.perf_counter()
        fitted = fit_start(fit_data, sigma, family, **options, **extra)
        out[name] = (sample_start(fitted, N_OUT, gen), time.perf_counter() - begin)
    return out


def bench(name: str, flow_steps: list[int]) -> dict:
    mix, options = setup(name)
    gen = torch.Generator().manual_seed(0)
    target, fit_data, other = mix.sample(N_OUT, gen), mix.sample(N_FIT, gen), mix.sample(N_OUT, gen)
    distance, model = Distances(target, other, with_fd=name == "digits"), ExactModel(mix)
    rows = [{"start": "exact samples (floor)"} | distance(other)]
    x = torch.randn(N_OUT, mix.dim, generator=gen, dtype=torch.float64) * SIGMA_MAX
    rows += [{"start": "gaussian at sigma_max=80", "nfe": n} | distance(run(model, x, SIGMA_MAX, n)) for n in NFES]
    for sigma in SIGMA_STARS:
        at_sigma = Distances(noised(mix, sigma, gen), noised(mix, sigma, gen), with_fd=False)
        oracle = {"oracle (exact noised)": (noised(mix, sigma, gen), 0.0)}
        for start, (y, seconds) in (oracle | starts(fit_data, sigma, options, flow_steps, gen)).items():
            head = {"start": start, "sigma_star": sigma, "fit_seconds": round(seconds, 2)}
            head |= {f"start_{k}": v for k, v in at_sigma(y).items()}
            rows += [head | {"nfe": n} | distance(run(model, y, sigma, n)) for n in NFES]
    dip = suggest_sigma_star(fit_data[:300], projections=16, null_draws=100, seed=0)
    return {"setup": {"mixture": name, "dim": mix.dim, "components": len(mix.log_weights), "n_fit": N_FIT,
                      "n_out": N_OUT, "fit_options": options, "flow_steps": flow_steps, "dip_sigma_star": dip,
                      "solver": "EPD K=1 data form (DDIM-type), log sigmas to 0.002 then 0"}, "rows": rows}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mixture", nargs="+", choices=("digits", "heavy"), default=["digits", "heavy"])
    p.add_argument("--flow-steps", type=int, nargs="+", default=[300, 1000], help="Adam steps of the flow fits")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.mixture:
        begin = time.monotonic()
        result = bench(name, args.flow_steps)
        result["setup"]["seconds"] = round(time.monotonic() - begin)
        out = Path(__file__).parent / "results" / f"skip_{name}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        for row in result["rows"]:
            print(row)  # noqa: T201


if __name__ == "__main__":
    main()
