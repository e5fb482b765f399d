"""Rollouts on the engine's denoiser protocol (tests, benchmarks, headless runs).

ComfyUI's rollout lives in nodes/ (guider + VAE); this one calls ``run_rows`` directly.
Image i shows prompt ``prompts[i % P]`` and the model must tile its per-prompt
conditioning cyclically over a K-major stack of rows, as ComfyUI does
(digits.ExactModel with ``classes=prompts`` does exactly that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..solver import StepConfig, run_rows
from .loop import Rollout, Rows


def denoiser_rollout(
    model_for: Callable[[list[int]], Callable[..., torch.Tensor]],
    noise_fn: Callable[[int], torch.Tensor],
    sigmas: torch.Tensor,
    step_config: StepConfig,
    to_images: Callable[[torch.Tensor], torch.Tensor],
) -> Rollout:
    """rollout(rows, prompts, seeds) -> images: one noise per seed, one EPD run, then ``to_images``.

    model_for(prompts) returns the denoiser conditioned on those prompts; noise_fn(seed)
    returns x at sigmas[0] for one image, [1, ...].
    """

    def rollout(rows: Rows, prompts: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
        if len(seeds) % len(prompts):
            raise ValueError(f"{len(seeds)} images do not split evenly over {len(prompts)} prompts")
        x = torch.cat([noise_fn(seed) for seed in seeds])
        with torch.no_grad():
            return to_images(run_rows(model_for(list(prompts)), x, sigmas, rows, step_config))

    return rollout
