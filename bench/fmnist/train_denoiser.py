"""Train a Fashion-MNIST denoiser fixture on CPU: ``python -m bench.fmnist.train_denoiser [--family eps]``.

The EDM family is described below; ``--family eps`` (SD1.5-style) and ``--family flow`` (SD3-style) swap
the parameterisation and loss for those of families.py and keep everything else.

EDM training (Karras et al. 2022, §5 and Table 1): ln(sigma) ~ N(P_mean, P_std^2), loss weight
lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, Adam, and an exponential moving average
of the weights whose half-life is counted in images. Labels are dropped to the null class with
probability ``label_dropout`` so that classifier-free guidance works. The EMA weights are written
to a safetensors file with the architecture and the training options in its metadata.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from . import data
from .checkpoint import save_module
from .families import FAMILIES, family_info, loss_for, wrap
from .unet import FORMAT, EDMDenoiser, UNet, UNetConfig, config_dict

log = logging.getLogger(__name__)
DEFAULT_OUT = Path(__file__).parent / "weights" / "fmnist_edm.safetensors"


def edm_loss(
    denoiser: EDMDenoiser,
    x0: torch.Tensor,
    labels: torch.Tensor,
    gen: torch.Generator,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> torch.Tensor:
    """Weighted denoising loss of Karras et al. (2022) eq. 8 with log-normal sigma, a scalar."""
    b = x0.shape[0]
    sigma = (p_mean + p_std * torch.randn(b, generator=gen)).exp()
    noise = torch.randn(x0.shape, generator=gen) * sigma[:, None, None, None]
    weight = (sigma**2 + denoiser.sigma_data**2) / (sigma * denoiser.sigma_data) ** 2
    denoised = denoiser(x0 + noise, sigma, labels)
    return (weight[:, None, None, None] * (denoised.float() - x0) ** 2).mean()


def ema_decay(batch: int, images_seen: int, halflife_images: float, rampup_ratio: float) -> float:
    """Per-step EMA decay for a half-life in images, shortened early on to ``rampup_ratio`` x images seen."""
    halflife = min(halflife_images, rampup_ratio * max(images_seen, 1))
    return 0.5 ** (batch / max(halflife, 1e-8))


def lr_at(progress: float, lr: float, warmup: float = 0.02, floor: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine decay to ``floor`` x lr."""
    if progress < warmup:
        return lr * max(progress / warmup, 1e-3)
    t = min((progress - warmup) / (1 - warmup), 1.0)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """ema <- beta ema + (1 - beta) model, parameter by parameter."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - beta)


def train(
    denoiser: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    seconds: float,
    batch: int = 64,
    lr: float = 2e-3,
    ema_halflife: float = 5000.0,
    ema_rampup: float = 0.1,
    label_dropout: float = 0.1,
    bf16: bool = True,
    seed: int = 0,
    loss_fn: Callable[..., torch.Tensor] = edm_loss,
) -> Iterator[dict[str, Any]]:
    """Adam training loop; yields a stats dict per step and leaves the EMA weights in ``stats['ema']``.

    steps: upper bound on optimiser steps. seconds: wall-clock budget; the learning-rate schedule
    runs on max(step / steps, elapsed / seconds), so a time-limited run still ends on a decayed rate.
    batch: images per step. lr: peak Adam learning rate. ema_halflife: EMA half-life in images.
    loss_fn: (denoiser, x0, labels, generator) -> scalar, the family's training loss.
    """
    gen = torch.Generator().manual_seed(seed)
    ema = copy.deepcopy(denoiser).requires_grad_(False)
    opt = torch.optim.Adam(denoiser.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-8)
    start, n = time.monotonic(), images.shape[0]
    for step in range(steps):
        progress = max(step / steps, (time.monotonic() - start) / seconds)
        if progress >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(progress, lr)
        idx = torch.randint(0, n, (batch,), generator=gen)
        y = labels[idx].masked_fill(torch.rand(batch, generator=gen) < label_dropout, -1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(denoiser, images[idx], y, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in denoiser.parameters():
            torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        opt.step()
        update_ema(ema, denoiser, ema_decay(batch, (step + 1) * batch, ema_halflife, ema_rampup))
        yield {
            "step": step + 1,
            "loss": loss.item(),
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.monotonic() - start,
            "ema": ema,
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=FAMILIES, default="edm", help="parameterisation (families.py): edm, eps, flow")
    p.add_argument("--out", type=Path, default=None, help="output .safetensors file (default weights/fmnist_<family>)")
    p.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget in minutes")
    p.add_argument("--steps", type=int, default=4000, help="maximum optimiser steps")
    p.add_argument("--batch", type=int, default=64, help="images per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate")
    p.add_argument("--ema-halflife", type=float, default=5000.0, help="EMA half-life in images")
    p.add_argument("--label-dropout", type=float, default=0.1, help="probability of the null label (for CFG)")
    p.add_argument("--channels", type=str, default="32,64,96", help="UNet channels per level")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32 instead of bf16 autocast")
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 was 5-10x faster than 2 on a busy 2-core machine)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for init, batches, noise and sigmas")
    p.add_argument("--log-every", type=int, default=50, help="steps between progress lines")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    config = UNetConfig(channels=tuple(int(c) for c in args.channels.split(",")))
    if args.dry_run:
        log.info("options %s, config %s", vars(args), config_dict(config))
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_set = data.load_split("train")
    denoiser = wrap(args.family, UNet(config))
    out = args.out or DEFAULT_OUT.with_name(f"fmnist_{args.family}.safetensors")
    log.info("parameters: %d", sum(p.numel() for p in denoiser.parameters()))
    losses: list[float] = []
    stats: dict[str, Any] = {}
    for stats in train(
        denoiser,
        *train_set,
        steps=args.steps,
        seconds=args.minutes * 60,
        batch=args.batch,
        lr=args.lr,
        ema_halflife=args.ema_halflife,
        label_dropout=args.label_dropout,
        bf16=args.bf16,
        seed=args.seed,
        loss_fn=loss_for(args.family),
    ):
        losses = (losses + [stats["loss"]])[-200:]
        if stats["step"] % args.log_every == 0:
            log.info(
                "step %d  loss %.4f (last-200 mean %.4f)  lr %.2e  %.0f s",
                stats["step"],
                stats["loss"],
                sum(losses) / len(losses),
                stats["lr"],
                stats["seconds"],
            )
    info = family_info(stats["ema"]) | file_info(args, stats, losses)
    save_module(out, stats["ema"].net, FORMAT, config_dict(config), info, torch.float16)
    log.info("saved %s", out)


def file_info(args: argparse.Namespace, stats: dict[str, Any], losses: list[float]) -> dict[str, Any]:
    """Provenance stored in the weight file's metadata; final_loss is the mean of the last 200 step losses."""
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    return {
        "training_steps": stats["step"],
        "images_seen": stats["step"] * args.batch,
        "train_seconds": round(stats["seconds"], 1),
        "final_loss": round(sum(losses) / len(losses), 5),
        "training_options": options,
        "data": "Fashion-MNIST train split, 60,000 images (Debian dataset-fashion-mnist, MIT licence), [-1, 1]",
        "torch": torch.__version__,
        "weights": "EMA",
    }


if __name__ == "__main__":
    main()
