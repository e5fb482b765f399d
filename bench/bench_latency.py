"""Wall time per image of EPD (K = 1-4) against euler and dpmpp_2m at equal sequential rounds (issue 14, item 6).

The network is a random-weight SDXL-architecture UNet built with ComfyUI's own class (the
config ComfyUI's model detection gives SDXL base), wrapped as an EPS denoiser on SD's
discrete schedule through ComfyUI's model_sampling. Only time is measured: random weights
make the images meaningless, and every sampler does the same model work per round except
EPD, whose second round evaluates K points in one call of K x batch rows.

What the numbers mean: a round is one sequential model call. At R rounds euler and
dpmpp_2m make R calls of ``batch`` rows; EPD with AFS off makes R / 2 steps, each one call
of ``batch`` rows and one of K x ``batch`` rows. On a GPU with spare batch capacity the
K-row call costs about as much as a 1-row call, which is the whole point of EPD; on a CPU
it costs about K times as much, so CPU results show the compute, not the latency a GPU
user sees. Each sampler is warmed up once, then timed ``--repeats`` times (median), with
torch.cuda.synchronize around each run on CUDA.

    python bench/bench_latency.py --device cuda --dtype float16 --size 1024 --batch 1 4   # the GPU run
    python bench/bench_latency.py --scale tiny --size 256 --batch 1 --repeats 3           # a CPU smoke run

Needs a ComfyUI checkout on sys.path (COMFYUI_PATH); writes bench/results/latency_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
SDXL_UNET = {  # what comfy.model_detection derives from an SDXL base checkpoint
    "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2],
    "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "transformer_depth_middle": 10,
    "context_dim": 2048, "num_head_channels": 64, "use_spatial_transformer": True,
    "use_linear_in_transformer": True, "adm_in_channels": 2816, "num_classes": "sequential", "legacy": False,
    "image_size": 32,
}  # fmt: skip
TINY_CHANGES = {"model_channels": 64, "transformer_depth": [0, 0, 1, 1, 1, 1],
                "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1], "transformer_depth_middle": 1}  # fmt: skip


def use_comfyui(device: torch.device) -> None:
    """Put COMFYUI_PATH on sys.path and set ComfyUI's --cpu for a CPU run, before any other comfy import."""
    checkout = os.environ.get("COMFYUI_PATH")
    if not checkout:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout: the UNet is ComfyUI's own class")
    sys.path.insert(0, checkout)
    from comfy.cli_args import args

    args.cpu = device.type == "cpu"


def build_unet(scale: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """ComfyUI's UNetModel with the SDXL config (or a narrow 'tiny' one), random weights, eval mode."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = {**SDXL_UNET, **(TINY_CHANGES if scale == "tiny" else {})}
    unet = UNetModel(**config, dtype=dtype, device=device, operations=comfy.ops.disable_weight_init)
    gen = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim <= 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return unet.eval()


def denoiser(unet: torch.nn.Module, batch: int, device: torch.device, dtype: torch.dtype) -> Callable[..., Any]:
    """D(x, sigma) of an EPS model on SD's discrete schedule, via ComfyUI's model_sampling."""
    import comfy.model_sampling as ms

    sampling = type("SDXLSampling", (ms.ModelSamplingDiscrete, ms.EPS), {})()
    context = torch.zeros(1, 77, SDXL_UNET["context_dim"], device=device, dtype=dtype)
    y = torch.zeros(1, SDXL_UNET["adm_in_channels"], device=device, dtype=dtype)

    def model(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        n = x.shape[0]
        xc = sampling.calculate_input(sigma, x).to(dtype)
        t = sampling.timestep(sigma).to(device)
        eps = unet(xc, t, context=context.expand(n, -1, -1), y=y.expand(n, -1)).to(x.dtype)
        return sampling.calculate_denoised(sigma, eps, x)

    model.sigma_max = float(sampling.sigma_max)
    model.sigma_min = float(sampling.sigma_min)
    return model


def samplers(rounds: int) -> dict[str, Callable[..., torch.Tensor]]:
    """name -> run(model, x, sigma grid builder); every entry spends ``rounds`` sequential model calls."""
    import comfy.k_diffusion.sampling as kd

    from epd_core.grids import epd_sigmas
    from epd_core.solver import sample_epd

    def k_diffusion(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        return lambda model, x: fn(model, x * model.sigma_max, grid(model, rounds), disable=True)

    def epd(k: int) -> Callable[..., torch.Tensor]:
        return lambda model, x: sample_epd(model, x * model.sigma_max, grid(model, rounds // 2), num_points=k,
                                           form="data", afs=False)  # fmt: skip

    def grid(model: Any, steps: int) -> torch.Tensor:
        return epd_sigmas(steps, model.sigma_min, model.sigma_max).to(torch.float32)

    runs = {"euler": k_diffusion(kd.sample_euler), "dpmpp_2m": k_diffusion(kd.sample_dpmpp_2m)}
    runs.update({f"epd_k{k}": epd(k) for k in (1, 2, 3, 4)})
    return runs


def time_run(run: Callable[[], Any], repeats: int, device: torch.device) -> list[float]:
    """Seconds per run after one warm-up, synchronised on CUDA."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    run()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    p.add_argument("--scale", choices=("sdxl", "tiny"), default="sdxl", help="tiny: 64 channels, for CPU smoke runs")
    p.add_argument("--size", type=int, default=1024, help="image side in pixels (latent = size / 8)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--rounds", type=int, default=8, help="sequential model calls per image (even)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    use_comfyui(device)
    unet = build_unet(args.scale, device, dtype)
    rows = []
    with torch.inference_mode():
        for batch in args.batch:
            model = denoiser(unet, batch, device, dtype)
            x = torch.randn(batch, 4, args.size // 8, args.size // 8, device=device, dtype=torch.float32)
            for name, run in samplers(args.rounds).items():
                times = time_run(lambda run=run, model=model, x=x: run(model, x), args.repeats, device)
                per_image = statistics.median(times) / batch
                rows.append({"sampler": name, "batch": batch, "seconds_per_image": per_image, "runs_s": times})
                print(f"batch {batch}  {name:9s} {per_image:8.3f} s/image  ({args.rounds} rounds)")  # noqa: T201
    out = Path(args.out or ROOT / "bench" / "results" / f"latency_{device.type}_{args.scale}_{args.size}.json")
    meta = {"device": device.type, "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "dtype": args.dtype, "scale": args.scale, "size": args.size,
            "rounds": args.rounds, "repeats": args.repeats}  # fmt: skip
    out.write_text(json.dumps({"setup": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")  # noqa: T201


if __name__ == "__main__":
    main()
