"""Scale-wise schedules: SwD's published presets and the latent sizes they give at any image size.

Presets (other-seeds.md C.2, from yandex-research/swd README and pipelines): each is a list
of scales as SwD publishes them (latent sides at 1024 px, 128 = full size) and its sigmas.
A scale becomes a factor of the final latent size (64 -> 0.5), so a preset works at any
width and height, non-square included: both sides get the same factor, rounded UP to a
multiple of the model's patch size (2 for SD3 / Flux DiTs, 1 for UNets) and capped at the
final size. Sigma spaces: "flow" sigmas are the model's own t in [0, 1]; "timestep" sigmas
are DDPM timesteps / 1000 (SDXL), mapped to the model's sigma by the caller.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

from .sampler import Size, fmt

SigmaSpace = Literal["flow", "timestep"]
FULL = 128  # SwD's scales are latent sides of a 1024 px image


class Preset(NamedTuple):
    """A published SwD schedule: scales at 1024 px, sigmas ending in 0, their space, the model family."""

    scales: tuple[int, ...]
    sigmas: tuple[float, ...]
    space: SigmaSpace
    family: str
    lora: str  # the checkpoint it was published with (Hugging Face)


_SD35_6 = ((32, 48, 64, 80, 96, 128), (1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0.0))
_SD35_4 = ((64, 80, 96, 128), (1.0, 0.8959, 0.7371, 0.6022, 0.0))
PRESETS: dict[str, Preset] = {
    "sd35_medium_6steps": Preset(*_SD35_6, "flow", "SD3.5 Medium", "yresearch/swd-medium-6-steps"),
    "sd35_medium_4steps": Preset(*_SD35_4, "flow", "SD3.5 Medium", "yresearch/swd-medium-4-steps"),
    "sd35_large_6steps": Preset(*_SD35_6, "flow", "SD3.5 Large", "yresearch/swd-large-6-steps"),
    "sd35_large_4steps": Preset(*_SD35_4, "flow", "SD3.5 Large", "yresearch/swd-large-4-steps"),
    # the Flux pipeline's code example; its README table repeats SD3.5 Large's 0.8959 / 0.7371 / 0.6022
    "flux_4steps": Preset(
        (64, 80, 96, 128), (1.0, 0.8956, 0.7363, 0.6007, 0.0), "flow", "FLUX.1-dev", "yresearch/swd_flux"
    ),
    "sdxl_4steps": Preset((64, 80, 96, 128), (1.0, 0.8, 0.6, 0.4, 0.0), "timestep", "SDXL", "yresearch/swd-sdxl"),
}
CUSTOM = "custom"


class ScaleSchedule(NamedTuple):
    """The EPD_SCALES value: one (height, width) latent size per step, the patch they are rounded to, the source."""

    sizes: tuple[Size, ...]
    patch: int = 1
    source: str = CUSTOM


PRESET_CHOICES = (*PRESETS, CUSTOM)


def preset_factors(preset: Preset) -> list[float]:
    """The preset's scales as factors of the final size (128 -> 1.0)."""
    return [s / FULL for s in preset.scales]


def round_up(value: float, patch: int) -> int:
    """value rounded up to a multiple of patch (at least one patch); a hair of float slack first."""
    return max(patch, math.ceil(value / patch - 1e-9) * patch)


def scale_sizes(factors: Sequence[float], height: int, width: int, patch: int = 1) -> list[Size]:
    """Latent sizes for factors of the final (height, width): rounded up to patch, capped, never shrinking.

    The last factor must be 1 (the final size), the factors must not decrease and lie in (0, 1].
    """
    problems = factor_problems(factors)
    if height < 1 or width < 1 or patch < 1:
        problems.append(f"height, width and patch must be >= 1, got {height}, {width}, {patch}")
    if problems:
        raise ValueError("; ".join(problems))
    sizes = [(min(height, round_up(f * height, patch)), min(width, round_up(f * width, patch))) for f in factors]
    return [(max(h for h, _ in sizes[: i + 1]), max(w for _, w in sizes[: i + 1])) for i in range(len(sizes))]


def factor_problems(factors: Sequence[float]) -> list[str]:
    """What is wrong with a list of scale factors, in words."""
    if not factors:
        return ["the scale list is empty; give one scale per step, e.g. 0.5, 0.625, 0.75, 1"]
    problems = []
    if any(not 0 < f <= 1 for f in factors):
        problems.append(f"scale factors must lie in (0, 1] of the final size, got {list(factors)}")
    if any(b < a for a, b in itertools.pairwise(factors)):
        problems.append(f"scales must not shrink from step to step, got {list(factors)}; list them smallest first")
    if factors[-1] != 1:
        problems.append(f"the last scale must be the final size (1.0), got {factors[-1]}")
    return problems


def parse_numbers(text: str, what: str) -> list[float]:
    """Comma- or space-separated numbers; ValueError naming the bad item."""
    items = [t for t in text.replace(",", " ").split() if t]
    try:
        return [float(t) for t in items]
    except ValueError:
        bad = next(t for t in items if not _is_number(t))
        raise ValueError(f"{what}: {bad!r} is not a number; write e.g. '0.5, 0.625, 0.75, 1'") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_scales(text: str) -> list[float]:
    """Custom scales: factors of the final size (0.5, 0.75, 1) or SwD's latent sides at 1024 px (64, 96, 128).

    When any value is above 1 they are read as sides and divided by the last one, so
    "32, 64, 128" and "0.25, 0.5, 1" are the same schedule.
    """
    values = parse_numbers(text, "custom scales")
    if values and max(values) > 1:
        values = [v / values[-1] for v in values]
    return values


def describe(sizes: Sequence[Size]) -> str:
    """'64x64 -> 80x80 -> ...' for logs and errors."""
    return " -> ".join(fmt(s) for s in sizes)
