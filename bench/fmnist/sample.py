"""Reference sampling for the Fashion-MNIST fixture: the engine's deterministic Heun sampler and a PNG grid.

``python -m bench.fmnist.sample --steps 50 --n 100 --out bench/out/fmnist_heun50.png``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from epd_core.baselines import run_heun
from epd_core.png import write_png
from epd_core.schedules import append_zero, get_sigmas_polynomial

from .unet import DEFAULT_WEIGHTS, guided, load_denoiser


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: n sigmas from sigma_max to sigma_min, then 0; float64 [n + 1]."""
    return append_zero(get_sigmas_polynomial(n, sigma_min, sigma_max, rho))


def generate(
    denoiser: Callable[..., torch.Tensor],
    n: int,
    *,
    steps: int = 50,
    cfg: float = 1.0,
    seed: int = 0,
    batch: int = 250,
    conditional: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples [n, 1, 28, 28] in [-1, 1] (clamped) and their labels (class i % 10, or -1 when unconditional)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10 if conditional else torch.full((n,), -1)
    noise = torch.randn(n, 1, 28, 28, generator=gen, dtype=torch.float64)
    sigmas = karras_sigmas(steps)
    out = []
    for start in range(0, n, batch):
        model = guided(denoiser, labels[start : start + batch], cfg)
        with torch.no_grad():
            out.append(run_heun(model, noise[start : start + batch] * sigmas[0], sigmas).float())
    return torch.cat(out).clamp(-1, 1), labels


def save_grid(path: str | Path, images: torch.Tensor, nrow: int = 10) -> None:
    """Write images [N, 1, H, W] in [-1, 1] as one grayscale PNG with a 2-pixel border."""
    n, _, h, w = images.shape
    rows = -(-n // nrow)
    grid = np.ones((rows * (h + 2) + 2, nrow * (w + 2) + 2))
    for i, img in enumerate(images[:, 0].numpy()):
        r, c = divmod(i, nrow)
        grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + c * (w + 2) : 2 + c * (w + 2) + w] = (img + 1) / 2
    write_png(path, grid)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="denoiser .safetensors file")
    p.add_argument("--out", type=Path, default=Path("bench/out/fmnist_heun.png"), help="PNG grid to write")
    p.add_argument("--n", type=int, default=100, help="number of samples (class i % 10)")
    p.add_argument("--steps", type=int, default=50, help="Heun steps (2 * steps - 1 model rounds)")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--unconditional", action="store_true", help="sample with the null label")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    images, _ = generate(
        load_denoiser(args.weights),
        args.n,
        steps=args.steps,
        cfg=args.cfg,
        seed=args.seed,
        conditional=not args.unconditional,
    )
    save_grid(args.out, images)


if __name__ == "__main__":
    main()
