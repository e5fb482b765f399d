"""ComfyUI boundary, RL rollouts: RDPO rollouts through a real CFGGuider and the user's VAE.

A rollout needs no gradient through the diffusion model, so it
is plain sampling through ``sampling.sample_epd_comfy``, the one sampler function (per-image table rows, with the
same interrupt, progress, mask and parallel handling as EPD Sampler), then ``VAE.decode``; only the small policy is trained, outside the sampling stack. Each
rollout is its own ``guider.sample`` call, so ComfyUI's memory manager can swap the model,
the VAE and the reward models between them. Like sampling.py, this module holds the
ComfyUI internals so the node file does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import comfy.model_management
import comfy.sample
import comfy.samplers
import numpy as np
import torch

from ...epd_core.params import EPDParams
from . import sampling, training


def image_noise(shape: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
    """One unit-normal latent per seed, [len(seeds), *shape[1:]]: an image depends only on its own seed."""
    return torch.cat([torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(int(s))) for s in seeds])


class ComfyRollout:
    """rollout(rows, prompts, seeds) -> images [B, H, W, 3] in [0, 1]; image i shows prompts[i % P]."""

    def __init__(self, model, vae, positive: list, negative: list, cfg: float, size: tuple[int, int],
                 table: EPDParams, form: str, node: str) -> None:  # fmt: skip
        self.model, self.vae, self.positive, self.negative = model, vae, positive, negative
        self.cfg, self.size, self.table, self.form, self.node = cfg, size, table, form, node
        self.sigmas = sampling.table_sigmas(model, table, node)

    def conds(self, prompts: Sequence[int]) -> tuple[list, list]:
        """One stacked positive and negative conditioning with a row per prompt (ComfyUI repeats it cyclically)."""
        pos = training.stack_conditioning([self.positive[p] for p in prompts], self.node)
        negatives = [self.negative[p if len(self.negative) > 1 else 0] for p in prompts]
        return pos, training.stack_conditioning(negatives, self.node)

    def __call__(self, rows, prompts: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
        shape = training.latent_shape(self.model, len(seeds), *self.size)
        latent = comfy.sample.fix_empty_latent_channels(self.model, torch.zeros(shape))
        guider = sampling.make_guider(self.model, *self.conds(prompts), self.cfg)
        sampler = sampling.make_sampler(params=self.table, form=self.form, rows=rows)
        with torch.no_grad():
            samples = guider.sample(image_noise(latent.shape, seeds), latent, sampler, self.sigmas,
                                    disable_pbar=True, seed=int(seeds[0]))  # fmt: skip
            samples = samples.to(comfy.model_management.intermediate_device())
            images = self.vae.decode(samples)
        if images.ndim == 5:  # video VAEs decode [B, T, H, W, C]; score the first frame
            images = images[:, 0]
        return images[..., :3].float().clamp(0, 1)


def preview_grid(images: torch.Tensor, limit: int = 4) -> tuple[str, Any, int]:
    """A ProgressBar preview tuple ("JPEG", PIL image, max size) of up to ``limit`` images side by side."""
    from PIL import Image

    row = torch.cat(list(images[:limit].float().cpu()), dim=1)
    pixels = (row.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return ("JPEG", Image.fromarray(pixels), 512)
