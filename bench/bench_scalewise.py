"""Scale-wise vs full-resolution sampling on power-law Gaussian fields (issue 16 C, other-seeds.md C.7).

Data: Gaussian random fields with power spectrum ~ (|nu|^2 + 1)^-1 (alpha 2, the 1/f^2 of
natural images), whose exact denoiser is a Wiener filter at every resolution
(epd_core.scalewise.fields), in the flow parameterisation x_t = (1 - t) x0 + t n of SD3 / Flux.
The final size is 32x32 or 64x64; SwD's latent schedules 64..128 are scaled by 1/4 or 1/2.

Methods (compute = model evaluations weighted by pixel count, in full-resolution steps):
- scale-wise, SwD's 4-step (0.5 -> 1) and 6-step (0.25 -> 1) presets, bicubic, and the other upscale modes;
- the same stochastic LCM-style sampler at full resolution on subsets of SwD's sigmas (2, 3, 4, 6 steps);
- the deterministic flow Euler ODE on the shift-3 grid (2, 3, 4, 8 steps and 64 as a near-converged check).
The denoiser is the exact posterior MEAN, which no few-step stochastic sampler can turn into samples of the
right variance; the "ideal generator" rows replace it by an exact posterior DRAW (what a distilled
student such as SwD's approximates), which isolates what the resizing itself costs: with it, one
full-resolution step is already exact.
With COMFYUI_PATH set, ComfyUI's own samplers run on the same flow model (ModelSamplingDiscreteFlow,
shift 3) at 4 sequential rounds, the scale-wise 4-step's count: euler and dpmpp_2m on the shift-3 grid,
lcm on SwD's sigmas, and SamplerLCMUpscale's sampler (4 steps, bicubic, from the half-size latent),
whose re-noise x0 + t n lacks the (1 - t) factor of flow models; dpmpp_2m also at 2 rounds.
Metrics against exact draws: RMS over radial frequency bins of log10(power / expected power)
(0 is exact), the power ratio in three frequency bands, and the squared patch MMD (4x4 patches,
RBF kernel, median bandwidth, unbiased) to independent exact draws; "exact" rows give the noise floor.
Usage: COMFYUI_PATH=/path/to/ComfyUI python -m bench.bench_scalewise  (from the repo root; without
COMFYUI_PATH the ComfyUI rows are left out; writes bench/results/scalewise.json).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from epd_core.mmd import mmd2, patches
from epd_core.scalewise import flow_noise_scaling, sample_scalewise
from epd_core.scalewise.fields import PowerLawField, radial_spectrum, radial_spectrum_expected, spectrum_error

FIELD = PowerLawField(alpha=2.0, nu0=1.0)
N_IMAGES, N_PATCHES, PATCH, SEED = 1024, 2048, 4, 0
SWD4 = ([0.5, 0.625, 0.75, 1.0], [1.0, 0.8959, 0.7371, 0.6022, 0.0])
SWD6 = ([0.25, 0.375, 0.5, 0.625, 0.75, 1.0], [1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0.0])
FULL_LCM = {2: [1.0, 0.6022, 0.0], 3: [1.0, 0.8959, 0.6022, 0.0], 4: SWD4[1], 6: SWD6[1]}


def denoiser(x: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
    return FIELD.denoise_flow(x, t)


def ideal_generator(seed: int):
    """A model that returns an exact posterior draw of x0 (its own seeded generator)."""
    gen = torch.Generator().manual_seed(seed)
    return lambda x, t, **_: FIELD.denoise_flow(x, t, gen)


def shifted_grid(steps: int, shift: float = 3.0) -> torch.Tensor:
    """SD3's flow grid: t = shift s / (1 + (shift - 1) s), s evenly spaced from 1 to 0."""
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return shift * s / (1 + (shift - 1) * s)


def euler_flow(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE, Euler in t: dx/dt = (x - D) / t."""
    for t, t_next in itertools.pairwise(sigmas):
        d = (x - denoiser(x, t.expand(len(x)))) / t
        x = x + (t_next - t) * d
    return x


def sizes(factors: list[float], n: int) -> list[tuple[int, int]]:
    return [(round(f * n), round(f * n)) for f in factors]


def scalewise(noise: torch.Tensor, factors: list[float], sigmas: list[float], upscale: str, seed: int, model=denoiser):
    n = noise.shape[-1]
    run = sample_scalewise(model, noise, torch.tensor(sigmas, dtype=torch.float64), scales=sizes(factors, n),
                           upscale=upscale, noise_scaling=flow_noise_scaling,
                           generator=torch.Generator().manual_seed(seed))  # fmt: skip
    return run, sum(h * w for h, w in sizes(factors, n)) / n**2, len(factors)


def comfy_samplers() -> SimpleNamespace | None:
    """ComfyUI's sampler functions and a flow model_sampling, when COMFYUI_PATH names a checkout."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        return None
    sys.path.insert(0, path)
    from comfy.cli_args import args

    args.cpu = True
    import comfy.k_diffusion.sampling as kd
    import comfy.model_sampling as ms
    from comfy_extras.nodes_advanced_samplers import sample_lcm_upscale

    class FlowSampling(ms.ModelSamplingDiscreteFlow, ms.CONST):
        pass

    sampling = FlowSampling()
    sampling.set_parameters(shift=3.0)
    return SimpleNamespace(kd=kd, lcm_upscale=sample_lcm_upscale, sampling=sampling)


def with_sampling(comfy: SimpleNamespace):
    """The exact denoiser where ComfyUI's sample_lcm looks for model_sampling (model.inner_model.inner_model)."""
    model = SimpleNamespace(inner_model=SimpleNamespace(inner_model=SimpleNamespace(model_sampling=comfy.sampling)))
    return type("Model", (), {"__call__": staticmethod(denoiser), "inner_model": model.inner_model})()


def comfy_runs(comfy: SimpleNamespace, noise: torch.Tensor) -> list[tuple]:
    """(name, samples, cost, calls) of ComfyUI's samplers; the global RNG is seeded for lcm_upscale's randn_like."""
    kd, model, swd = comfy.kd, with_sampling(comfy), torch.tensor(SWD4[1], dtype=torch.float64)
    half = noise[..., ::2, ::2]  # every other pixel of i.i.d. noise: i.i.d. noise at half size
    torch.manual_seed(SEED + 3)
    up = comfy.lcm_upscale(model, half, swd, {}, None, True, 2.0, "bicubic", 3)
    n = noise.shape[-1]
    up_cost = sum(round(n / 2 * f) ** 2 for f in (1.0, 4 / 3, 5 / 3, 2.0)) / n**2
    return [
        ("ComfyUI euler 4-step", kd.sample_euler(model, noise, shifted_grid(4), disable=True), 4.0, 4),
        ("ComfyUI dpmpp_2m 4-step", kd.sample_dpmpp_2m(model, noise, shifted_grid(4), disable=True), 4.0, 4),
        ("ComfyUI dpmpp_2m 2-step", kd.sample_dpmpp_2m(model, noise, shifted_grid(2), disable=True), 2.0, 2),
        ("ComfyUI lcm 4-step (SwD sigmas)", kd.sample_lcm(model, noise, swd, {"seed": SEED + 1}, disable=True), 4.0, 4),
        ("ComfyUI SamplerLCMUpscale 4-step (x0 + t n)", up, up_cost, 4),
    ]


def metrics(x: torch.Tensor, ref: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
    n = x.shape[-1]
    ratio = radial_spectrum(x) / radial_spectrum_expected(FIELD, n)
    third = len(ratio) // 3
    a, b = patches(x, PATCH), patches(ref, PATCH)
    a = a[torch.randperm(len(a), generator=gen)[:N_PATCHES]]
    b = b[torch.randperm(len(b), generator=gen)[:N_PATCHES]]
    return {
        "spectrum_log10_rms": round(spectrum_error(x, FIELD), 4),
        "power_ratio_low": round(float(ratio[:third].mean()), 4),
        "power_ratio_mid": round(float(ratio[third : 2 * third].mean()), 4),
        "power_ratio_high": round(float(ratio[2 * third :].mean()), 4),
        "patch_mmd2": round(float(mmd2(a, b)), 5),
    }


def rows_at(n: int, comfy: SimpleNamespace | None) -> list[dict]:
    gen = torch.Generator().manual_seed(SEED)
    ref = FIELD.sample(N_IMAGES, 1, n, n, gen)
    noise = torch.randn(N_IMAGES, 1, n, n, generator=gen, dtype=torch.float64)
    rows = [{"method": "exact draws (noise floor)", "cost": 0.0, "calls": 0,
             **metrics(FIELD.sample(N_IMAGES, 1, n, n, gen), ref, gen)}]  # fmt: skip
    runs = [(f"scale-wise SwD 4-step, {up}", *scalewise(noise, *SWD4, up, SEED + 1))
            for up in ("bicubic", "bilinear", "nearest-exact", "area")]  # fmt: skip
    runs.append(("scale-wise SwD 6-step, bicubic", *scalewise(noise, *SWD6, "bicubic", SEED + 1)))
    for k, sig in FULL_LCM.items():
        runs.append((f"full-res LCM {k}-step", *scalewise(noise, [1.0] * k, sig, "bicubic", SEED + 1)))
    for k in (2, 3, 4, 8, 64):
        runs.append((f"full-res Euler ODE {k}-step", euler_flow(noise, shifted_grid(k)), float(k), k))
    ideal = [("full-res 1-step", [1.0], [1.0, 0.0], "bicubic"), ("full-res LCM 4-step", [1.0] * 4, SWD4[1], "bicubic"),
             ("scale-wise SwD 4-step, bicubic", *SWD4, "bicubic"), ("scale-wise SwD 4-step, nearest-exact", *SWD4,
             "nearest-exact"), ("scale-wise SwD 6-step, bicubic", *SWD6, "bicubic")]  # fmt: skip
    for name, factors, sig, up in ideal:
        run = scalewise(noise, factors, sig, up, SEED + 1, ideal_generator(SEED + 2))
        runs.append((f"ideal generator: {name}", *run))
    if comfy is not None:
        runs += comfy_runs(comfy, noise)
    for name, x, cost, calls in runs:
        rows.append({"method": name, "cost": round(cost, 4), "calls": calls, **metrics(x, ref, gen)})
    return rows


def main() -> None:
    start = time.monotonic()
    comfy = comfy_samplers()
    results = {f"{n}x{n}": rows_at(n, comfy) for n in (32, 64)}
    setup = {
        "field": FIELD._asdict(), "images": N_IMAGES, "patch": PATCH, "patches_compared": N_PATCHES, "seed": SEED,
        "swd4": SWD4, "swd6": SWD6, "full_lcm_sigmas": FULL_LCM, "ode_grid": "SD3 shift 3", "comfyui": comfy is not None,
        "cost": "sum over steps of (step pixels / final pixels)", "seconds": round(time.monotonic() - start, 1),
        "torch": torch.__version__,
    }  # fmt: skip
    out = Path(__file__).parent / "results" / "scalewise.json"
    out.write_text(json.dumps({"setup": setup, "results": results}, indent=1) + "\n")
    for size, rows in results.items():
        for r in rows:
            line = f"{size} {r['method']:<36} cost {r['cost']:5.2f}  spec {r['spectrum_log10_rms']:.3f}  "
            line += f"mmd2 {r['patch_mmd2']:.5f}  high {r['power_ratio_high']:.3f}"
            print(line)  # noqa: T201


if __name__ == "__main__":
    main()
