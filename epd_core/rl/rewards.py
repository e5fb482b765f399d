"""Rewards for RDPO (docs/rewards.md): ``reward(images, prompts) -> scores``.

A reward takes ComfyUI IMAGE tensors ``images: [B, H, W, 3]`` in [0, 1] and ``prompts``, a
list of B strings (empty strings for image-only rewards), and returns float32 ``scores: [B]``
normalised to roughly [0, 1] so that rewards can be mixed with comparable weights
(upstream's ``RewardMultiMetric``: R = sum_m w_m norm_m(score_m) / sum_m w_m).

The weight-free rewards live here; the learned ones (aesthetic, PickScore, CLIP, HPS) are
built by the node pack on top of ``BaseReward`` because they load models through ComfyUI.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

# Tolerance on the [0, 1] range: VAE decodes are clamped, but resampling can overshoot slightly.
RANGE_TOLERANCE = 1e-3
# Rec. 601 luma weights (the ones JPEG and PIL's "L" conversion use).
LUMA = (0.299, 0.587, 0.114)
JPEG_QUALITY = 95  # DDPO's compressibility reward encodes at quality 95
RAW_BITS_PER_PIXEL = 24.0  # 8-bit RGB without compression
SHARPNESS_SCALE = 0.1  # Laplacian RMS (luma units) that scores 0.5; see sharpness_scores


@runtime_checkable
class RewardFn(Protocol):
    """What EPD RL Tune calls: a name plus ``(images [B, H, W, 3], prompts) -> float32 [B]``."""

    name: str

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor: ...


def check_images(images: torch.Tensor, name: str) -> torch.Tensor:
    """A float [B, H, W, 3] batch in [0, 1] (clamped within RANGE_TOLERANCE), or a ValueError/TypeError."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: images must be a torch.Tensor [B, H, W, 3], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] != 3 or min(images.shape) == 0:
        raise ValueError(
            f"{name}: images must have shape [B, H, W, 3] (ComfyUI IMAGE, RGB), got {list(images.shape)}; "
            "drop an alpha channel or batch single images first"
        )
    if not images.is_floating_point():
        raise TypeError(f"{name}: images must be floating point in [0, 1], got dtype {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"{name}: image values must be finite and in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
            "pass decoded images (VAE Decode output), not latents or 0..255 pixels"
        )
    return images.clamp(0.0, 1.0)


def check_prompts(prompts: Sequence[str] | None, batch: int, name: str) -> list[str]:
    """B prompt strings; None or an empty sequence means B empty prompts."""
    if prompts is None or len(prompts) == 0:
        return [""] * batch
    if isinstance(prompts, str):
        raise TypeError(f"{name}: prompts must be a list of strings, one per image, not a single string")
    if len(prompts) != batch:
        raise ValueError(f"{name}: got {len(prompts)} prompts for {batch} images; give one prompt per image")
    bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if bad:
        raise TypeError(f"{name}: prompts must be strings, got {sorted(set(bad))}")
    return list(prompts)


def check_scores(scores: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """Float32 [B] on the CPU; a wrong shape or a NaN is a bug in the reward, reported with its name."""
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float32).reshape(-1)
    if scores.shape[0] != batch:
        raise ValueError(f"{name}: returned {scores.shape[0]} scores for {batch} images")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name}: returned non-finite scores {scores.tolist()}")
    return scores


class BaseReward:
    """Base class: validates inputs, runs ``score`` under no_grad, returns float32 [B] on the CPU."""

    name = "reward"

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        images = check_images(images, self.name)
        texts = check_prompts(prompts, images.shape[0], self.name)
        with torch.no_grad():
            scores = self.score(images, texts)
        return check_scores(scores, images.shape[0], self.name)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Scores [B] of a validated batch; subclasses implement this."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def luminance(images: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma Y [B, H, W] of RGB images [B, H, W, 3], in float32."""
    weights = torch.tensor(LUMA, dtype=torch.float32, device=images.device)
    return images.to(torch.float32) @ weights


def jpeg_bits_per_pixel(images: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """Size [B] of each image as a JPEG at ``quality`` (8-bit RGB, PIL), in bits per pixel."""
    from PIL import Image  # lazy: only this reward needs Pillow

    pixels = (images.detach().to("cpu", torch.float32) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    sizes = []
    for array in pixels:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        sizes.append(8.0 * buffer.tell() / (array.shape[0] * array.shape[1]))
    return torch.tensor(sizes, dtype=torch.float32)


class JPEGIncompressibility(BaseReward):
    """DDPO's incompressibility: the JPEG size, as bits per pixel / 24 (raw 8-bit RGB = 1).

    DDPO scores the size in kB; per pixel makes the score independent of the resolution.
    Flat images score near 0, photographs about 0.05-0.2, pure noise about 0.4-0.6.
    """

    name = "jpeg_incompressibility"

    def __init__(self, quality: int = JPEG_QUALITY) -> None:
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"{self.name}: JPEG quality must be in 1..100, got {quality}")
        self.quality = int(quality)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return jpeg_bits_per_pixel(images, self.quality) / RAW_BITS_PER_PIXEL


class JPEGCompressibility(JPEGIncompressibility):
    """DDPO's compressibility (reward = -size), shifted to 1 - bits per pixel / 24: flat images score near 1."""

    name = "jpeg_compressibility"

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return 1.0 - super().score(images, prompts)


def laplacian_rms(images: torch.Tensor) -> torch.Tensor:
    """RMS [B] of the 4-neighbour Laplacian of the luma, over interior pixels (sqrt of its variance about 0)."""
    y = luminance(images)
    if y.shape[1] < 3 or y.shape[2] < 3:
        raise ValueError(f"sharpness: images must be at least 3x3 pixels, got {y.shape[1]}x{y.shape[2]}")
    lap = y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:] - 4.0 * y[:, 1:-1, 1:-1]
    lap = lap - lap.mean(dim=(1, 2), keepdim=True)
    return lap.square().mean(dim=(1, 2)).sqrt()


class Sharpness(BaseReward):
    """Variance of the Laplacian of the luma (the classic focus measure), mapped to [0, 1).

    score = s / (s + 0.1) with s the Laplacian's standard deviation in luma units: monotone in
    the variance, 0.5 at s = 0.1 (a crisp photograph at 512 px), saturating for noise so that
    adding noise is not rewarded without bound. Measured at the image's own resolution.
    """

    name = "sharpness"

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        rms = laplacian_rms(images)
        return rms / (rms + SHARPNESS_SCALE)


class Contrast(BaseReward):
    """RMS contrast: 2 x the standard deviation of the luma, so 1 = half black, half white."""

    name = "contrast"

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        y = luminance(images).flatten(1)
        return 2.0 * y.std(dim=1, unbiased=False)


def check_weights(weights: Sequence[float], count: int, name: str) -> list[float]:
    """Finite, non-negative weights, one per reward, not all zero."""
    values = [float(w) for w in weights]
    if len(values) != count:
        raise ValueError(f"{name}: got {len(values)} weights for {count} rewards; give one weight per reward")
    if any(not math.isfinite(w) or w < 0 for w in values):
        raise ValueError(f"{name}: weights must be finite and >= 0, got {values}")
    if sum(values) <= 0:
        raise ValueError(f"{name}: all weights are 0; give at least one reward a positive weight")
    return values


class MixedReward(BaseReward):
    """R = sum_m w_m r_m / sum_m w_m (docs/rewards.md); rewards with weight 0 are not run."""

    def __init__(self, rewards: Sequence[RewardFn], weights: Sequence[float]) -> None:
        if len(rewards) == 0:
            raise ValueError("reward mix: give at least one reward")
        for reward in rewards:
            if not callable(reward):
                raise TypeError(f"reward mix: {reward!r} is not a reward (callable(images, prompts) -> scores)")
        self.weights = check_weights(weights, len(rewards), "reward mix")
        self.rewards = list(rewards)
        total = sum(self.weights)
        parts = [f"{w / total:.3g}*{getattr(r, 'name', 'reward')}" for r, w in zip(self.rewards, self.weights) if w]
        self.name = "mix(" + " + ".join(parts) + ")"

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        total = torch.zeros(images.shape[0], dtype=torch.float64)
        for reward, weight in zip(self.rewards, self.weights):
            if weight > 0:
                part = check_scores(reward(images, prompts), images.shape[0], getattr(reward, "name", "reward"))
                total += weight * part.to(torch.float64)
        return total / sum(self.weights)


WEIGHT_FREE: dict[str, type[BaseReward]] = {
    "jpeg_compressibility": JPEGCompressibility,
    "jpeg_incompressibility": JPEGIncompressibility,
    "sharpness": Sharpness,
    "contrast": Contrast,
}


def weight_free_reward(kind: str) -> BaseReward:
    """A weight-free reward by name (the keys of WEIGHT_FREE)."""
    if kind not in WEIGHT_FREE:
        raise ValueError(f"unknown reward {kind!r}; choose one of {sorted(WEIGHT_FREE)}")
    return WEIGHT_FREE[kind]()
