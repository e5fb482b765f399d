"""ComfyUI bridge, RL half: RDPO rollouts through a real CFGGuider and the user's VAE.

comfyui-integration.md §3.5: a rollout needs no gradient through the diffusion model, so it
is plain sampling (a KSAMPLER whose function runs the engine on per-image table rows),
then ``VAE.decode``; only the small policy is trained, outside the sampling stack. Each
rollout is its own ``guider.sample`` call, so ComfyUI's memory manager can swap the model,
the VAE and the reward models between them. Like bridge.py, this module holds the
ComfyUI internals so the node file does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import comfy.model_management
import comfy.sample
import comfy.samplers
import numpy as np
import torch

from ..epd_core.rl import Cancelled
from ..epd_core.solver import StepConfig, run_rows
from . import training_bridge


def sample_rows_comfy(model, x, sigmas, extra_args=None, callback=None, disable=None, *, rows, config):
    """KSAMPLER function: the EPD loop on precomputed (per-image) rows."""
    with torch.no_grad():
        return run_rows(model, x, sigmas, rows, config, extra_args, callback)


def image_noise(shape: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
    """One unit-normal latent per seed, [len(seeds), *shape[1:]]: an image depends only on its own seed."""
    return torch.cat([torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def cancel_callback(should_stop: Callable[[], bool]) -> Callable[..., None]:
    """A sampler callback that ends the run at the next step once Cancel was pressed."""

    def callback(step: int, denoised: Any, x: Any, total: int) -> None:
        if should_stop():
            raise Cancelled

    return callback


class ComfyRollout:
    """rollout(rows, prompts, seeds) -> images [B, H, W, 3] in [0, 1]; image i shows prompts[i % P]."""

    def __init__(self, model, vae, positive: list, negative: list, cfg: float, size: tuple[int, int], sigmas,
                 config: StepConfig, should_stop: Callable[[], bool], node: str) -> None:  # fmt: skip
        self.model, self.vae, self.positive, self.negative = model, vae, positive, negative
        self.cfg, self.size, self.sigmas, self.config, self.node = cfg, size, sigmas, config, node
        self.callback = cancel_callback(should_stop)

    def conds(self, prompts: Sequence[int]) -> tuple[list, list]:
        """One stacked positive and negative conditioning with a row per prompt (ComfyUI repeats it cyclically)."""
        pos = training_bridge.stack_conditioning([self.positive[p] for p in prompts], self.node)
        negatives = [self.negative[p if len(self.negative) > 1 else 0] for p in prompts]
        return pos, training_bridge.stack_conditioning(negatives, self.node)

    def __call__(self, rows, prompts: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
        shape = training_bridge.latent_shape(self.model, len(seeds), *self.size)
        latent = comfy.sample.fix_empty_latent_channels(self.model, torch.zeros(shape))
        guider = comfy.samplers.CFGGuider(self.model)
        guider.set_conds(*self.conds(prompts))
        guider.set_cfg(self.cfg)
        sampler = comfy.samplers.KSAMPLER(sample_rows_comfy, extra_options={"rows": rows, "config": self.config})
        with torch.no_grad():
            samples = guider.sample(image_noise(latent.shape, seeds), latent, sampler, self.sigmas.float(),
                                    callback=self.callback, disable_pbar=True, seed=int(seeds[0]))  # fmt: skip
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
