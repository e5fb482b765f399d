"""Scale-wise sampling after SwD (Starodubcev et al. 2025, arXiv:2503.16397; other-seeds.md C.2).

Step i runs the model at scale i (a latent height x width) and noise level sigmas[i]; its
x0 prediction is resized to scale i + 1 (bicubic by default) and re-noised to sigmas[i + 1]
with fresh seeded noise, through the MODEL's own noise scaling:
    ve (eps/v/EDM):  x = x0 + sigma * n
    flow (CONST):    x = sigma * n + (1 - sigma) * x0
ComfyUI's SamplerLCMUpscale adds sigma * n for every model, which is wrong for flow models
(the (1 - sigma) factor is missing); here the caller passes the model's noise_scaling.
The last step (sigma_next = 0) returns the x0 prediction at the final scale.

Start: the state handed in may be at the final scale (ComfyUI's latent, the default there)
or at the first one. A larger start is subsampled with nearest-exact, which keeps i.i.d.
Gaussian noise exactly i.i.d. with the same variance (area averaging would shrink it); when
the clean latent it was noised from is given, its part is area-downsampled instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

UPSCALE_MODES = ("bicubic", "bilinear", "nearest-exact", "area")
NoiseScaling = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Size = tuple[int, int]


def ve_noise_scaling(sigma: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """x = x0 + sigma * n: eps, v and EDM models (ComfyUI's EPS.noise_scaling without max_denoise)."""
    return x0 + sigma * noise


def flow_noise_scaling(sigma: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """x = sigma * n + (1 - sigma) * x0: rectified flow (ComfyUI's CONST.noise_scaling)."""
    return sigma * noise + (1.0 - sigma) * x0


NOISE_SCALINGS: dict[str, NoiseScaling] = {"ve": ve_noise_scaling, "flow": flow_noise_scaling}


def size_of(x: torch.Tensor) -> Size:
    """(height, width) of a [B, C, H, W] latent."""
    return int(x.shape[-2]), int(x.shape[-1])


def resize(x: torch.Tensor, size: Size, mode: str = "bicubic") -> torch.Tensor:
    """x [B, C, H, W] resized to size; float32 at least, so half tensors work on every device."""
    if size_of(x) == tuple(size):
        return x
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    corners = {"align_corners": False} if mode in ("bicubic", "bilinear") else {}
    return F.interpolate(work, size=tuple(size), mode=mode, **corners).to(x.dtype)


def start_state(x: torch.Tensor, size: Size, latent: torch.Tensor | None = None, weight: float = 1.0) -> torch.Tensor:
    """The start state at ``size`` from x = noise_scaling(sigma_0, n, latent) at a larger size.

    nearest-exact keeps the noise i.i.d. N(0, s^2); the latent's part (weight = its coefficient
    in the noise scaling: 1 for ve, 1 - sigma_0 for flow) is swapped for its area average.
    """
    small = resize(x, size, "nearest-exact")
    if latent is not None and latent.ndim == 4 and size_of(latent) == size_of(x):
        small = small + weight * (resize(latent, size, "area") - resize(latent, size, "nearest-exact")).to(x)
    return small


def schedule_problems(scales: Sequence[Size], sigmas: torch.Tensor, shape: Sequence[int]) -> list[str]:
    """Every problem of a scale schedule against its sigmas and the latent, in words (empty when fine)."""
    if len(shape) != 4:
        return [f"scale-wise sampling needs an image latent [B, C, H, W]; got shape {tuple(shape)} (video and "
                "audio latents are not supported)"]  # fmt: skip
    if not scales:
        return ["the scale list is empty; give one latent size per step"]
    bad = [s for s in scales if len(s) != 2 or any(int(v) != v or v < 1 for v in s)]
    if bad:
        return [f"scales must be positive whole latent sizes (height, width); got {bad}"]
    problems = []
    if len(sigmas) != len(scales) + 1:
        problems.append(f"{len(scales)} scales need {len(scales) + 1} sigmas (one per step plus the final one), got "
                        f"{len(sigmas)}; use the SIGMAS of the same schedule, or one scale per step")  # fmt: skip
    if len(sigmas) > 1 and not bool((sigmas[1:] < sigmas[:-1]).all()):
        problems.append(f"sigmas must decrease step by step; got {[round(float(s), 4) for s in sigmas]}")
    for i in range(1, len(scales)):
        if scales[i][0] < scales[i - 1][0] or scales[i][1] < scales[i - 1][1]:
            problems.append(f"scales must not shrink: step {i} is {fmt(scales[i - 1])} but step {i + 1} is "
                            f"{fmt(scales[i])}; list them from the smallest to the final size")  # fmt: skip
            break
    here = (int(shape[-2]), int(shape[-1]))
    if here not in (tuple(scales[-1]), tuple(scales[0])):
        problems.append(f"the latent is {fmt(here)} but the schedule ends at {fmt(scales[-1])} (latent "
                        "height x width); make the latent at the schedule's final size, or the schedule for this "
                        "latent's size")  # fmt: skip
    return problems


def fmt(size: Sequence[int]) -> str:
    """'HxW' of a size."""
    return f"{int(size[0])}x{int(size[1])}"


def check_schedule(scales: Sequence[Size], sigmas: torch.Tensor, shape: Sequence[int], upscale: str) -> None:
    """Raise one ValueError listing every problem (schedule_problems) and a bad upscale mode."""
    problems = schedule_problems(scales, sigmas, shape)
    if upscale not in UPSCALE_MODES:
        problems.append(f"upscale={upscale!r} is not one of {UPSCALE_MODES}")
    if problems:
        raise ValueError("; ".join(problems))


def draw_noise(shape: Sequence[int], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Unit Gaussian noise from a CPU generator, moved to like's device and dtype (reproducible anywhere)."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    return torch.randn(tuple(shape), generator=generator, dtype=dtype).to(like.device, like.dtype)


def renoise(
    x0: torch.Tensor, sigma: torch.Tensor, noise_scaling: NoiseScaling, generator: torch.Generator
) -> torch.Tensor:
    """The state at sigma from the x0 prediction and fresh noise, by the model's noise scaling."""
    return noise_scaling(sigma, draw_noise(x0.shape, x0, generator), x0)


@torch.no_grad()
def sample_scalewise(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    disable: bool | None = None,
    *,
    scales: Sequence[Size],
    upscale: str = "bicubic",
    noise_scaling: NoiseScaling = ve_noise_scaling,
    generator: torch.Generator | None = None,
    latent: torch.Tensor | None = None,
    latent_weight: float = 1.0,
) -> torch.Tensor:
    """Scale-wise sampling, SwD (arXiv:2503.16397): denoise at scale i, resize x0, re-noise at sigmas[i + 1].

    x [B, C, H, W] at the final or the first scale; scales: one (height, width) per step,
    never shrinking, the last one the final size; len(sigmas) == len(scales) + 1.
    generator: the re-noising noise (default: seeded from extra_args["seed"], else 0).
    latent, latent_weight: see start_state. Returns the sample at scales[-1].
    """
    extra_args = {} if extra_args is None else extra_args
    check_schedule(scales, sigmas, x.shape, upscale)
    if generator is None:
        generator = torch.Generator().manual_seed(int(extra_args.get("seed") or 0))
    sizes = [(int(h), int(w)) for h, w in scales]
    x = start_state(x, sizes[0], latent, latent_weight) if size_of(x) != sizes[0] else x
    s_in = x.new_ones([x.shape[0]])
    for i, size_next in enumerate(sizes[1:] + sizes[-1:]):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x0 = resize(denoised, size_next, upscale)
        x = renoise(x0, sigmas[i + 1], noise_scaling, generator) if float(sigmas[i + 1]) > 0 else x0
    return x
