"""ComfyUI bridge, training half: runs an epd_core training loop inside ComfyUI's sampling stack.

comfyui-integration.md §3.3-3.5: the loop is driven through a real CFGGuider (so conds,
ControlNets, patches and model loading behave as in sampling) by a ``Sampler`` subclass
whose ``sample`` hands the loop a denoiser. Prompts run under ``torch.inference_mode``; the
loop runs under ``inference_mode(False)`` with grad enabled and ``in_training`` set, and
every conditioning tensor is cloned so autograd may save it. Like bridge.py, this module
touches ComfyUI internals so the node files do not.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import comfy.model_management
import comfy.samplers
import comfy.utils
import torch

log = logging.getLogger(__name__)

TRAIN_EVENT = "epd.train"


def clone_tensors(value: Any) -> Any:
    """A copy of nested conds with every tensor cloned (inference tensors cannot be saved for backward)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: clone_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clone_tensors(v) for v in value)
    if hasattr(value, "cond") and isinstance(getattr(value, "cond", None), torch.Tensor):
        copy = value._copy_with(value.cond.clone()) if hasattr(value, "_copy_with") else value
        return copy
    return value


def stack_conditioning(conditionings: list[Any], node: str) -> list[list[Any]]:
    """One CONDITIONING whose batch holds one prompt per row; ComfyUI repeats it cyclically over the latents.

    Every prompt must encode to the same token length, because rows are concatenated.
    """
    firsts = [c[0] for c in conditionings]
    shapes = {tuple(c[0].shape[1:]) for c in firsts}
    if len(shapes) != 1:
        raise ValueError(
            f"{node}: the prompts encode to different token lengths {sorted(shapes)}; "
            "shorten the long prompts to 75 tokens or split them into separate runs."
        )
    context = torch.cat([c[0] for c in firsts])
    extras: dict[str, Any] = {}
    for key, value in firsts[0][1].items():
        values = [c[1].get(key) for c in firsts]
        if isinstance(value, torch.Tensor) and all(isinstance(v, torch.Tensor) for v in values):
            extras[key] = torch.cat(values)
        else:
            extras[key] = value
    return [[context, extras]]


@contextlib.contextmanager
def training_mode() -> Iterator[None]:
    """Autograd on inside a prompt; ``in_training`` reset even when the loop fails or is cancelled."""
    with torch.inference_mode(False), torch.enable_grad():
        comfy.model_management.in_training = True
        try:
            yield
        finally:
            comfy.model_management.in_training = False


class LoopSampler(comfy.samplers.Sampler):
    """A SAMPLER whose sample() runs ``loop(denoiser)`` instead of sampling; the result is kept."""

    def __init__(self, loop: Callable[[Callable[..., torch.Tensor]], Any]) -> None:
        self.loop, self.result = loop, None

    def sample(
        self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False
    ):
        model_wrap.conds = clone_tensors(model_wrap.conds)
        args = dict(extra_args)

        def denoiser(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
            return model_wrap(x, sigma, **args)

        self.result = self.loop(denoiser)
        return noise


def run_in_guider(
    model: Any, positive: Any, negative: Any, cfg: float, sigmas: torch.Tensor, latent_shape, loop
) -> Any:
    """Run ``loop(denoiser)`` inside CFGGuider.sample on ``model``; returns the loop's result."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    sampler = LoopSampler(loop)
    latent = torch.zeros(latent_shape)
    with training_mode():
        guider.sample(latent, latent.clone(), sampler, sigmas.float(), disable_pbar=True, seed=0)
    return sampler.result


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """requires_grad off on every parameter for the block, then as it was (the module is shared by the graph)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def decoded_images_fn(model: Any, vae: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """features(x) -> the VAE-decoded image [B, H, W, 3] of a state x in the sampler's latent space.

    The distillation loop sees latents as the guider does (after process_latent_in), so they
    go back through process_latent_out before VAE.decode, which stays differentiable.
    """
    to_vae_space = model.model.process_latent_out

    def features(x: torch.Tensor) -> torch.Tensor:
        with frozen(vae.first_stage_model):  # gradients reach the table only, never the VAE's weights
            images = vae.decode(to_vae_space(x).to(comfy.model_management.intermediate_device()))
        return (images[:, 0] if images.ndim == 5 else images)[..., :3].float()

    return features


def latent_shape(model: Any, batch: int, width: int, height: int) -> tuple[int, ...]:
    """[batch, C, height / s, width / s] of the model's latent space."""
    latent_format = model.get_model_object("latent_format")
    spacial = getattr(latent_format, "spacial_downscale_ratio", 8)
    return (batch, latent_format.latent_channels, height // spacial, width // spacial)


def noise_fn_for(
    model: Any, shape: tuple[int, ...], sigma_start: float
) -> Callable[[int, torch.Generator], torch.Tensor]:
    """noise_fn(batch, generator) -> x at sigma_start from pure noise, scaled as ComfyUI samplers get it."""
    model_sampling = model.get_model_object("model_sampling")
    device = model.load_device

    def noise_fn(batch: int, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn((batch, *shape[1:]), generator=gen)
        x = model_sampling.noise_scaling(torch.tensor(sigma_start), z, torch.zeros_like(z), True)
        return x.to(device)

    return noise_fn


class Reporter:
    """Progress bar, live websocket loss events and cancel detection for a training node."""

    def __init__(self, total: int, node_id: str | None) -> None:
        self.total, self.node_id = total, node_id
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id)
        self.cancelled = False

    def update(self, step: int, preview: Any = None, **values: float) -> None:
        """Progress (with an optional ProgressBar preview tuple) and a live chart event."""
        self.bar.update_absolute(step, self.total, preview)
        with contextlib.suppress(Exception):  # feature probe: no server when run outside ComfyUI's main
            from server import PromptServer

            payload = {"node": self.node_id, "step": step, "total": self.total, **values}
            PromptServer.instance.send_sync(TRAIN_EVENT, payload, PromptServer.instance.client_id)

    def should_stop(self) -> bool:
        """True once Cancel was pressed; the flag is cleared so the node can still return its best result."""
        if comfy.model_management.processing_interrupted():
            comfy.model_management.interrupt_current_processing(False)
            self.cancelled = True
            log.info("EPD: training cancelled; returning the best result so far.")
        return self.cancelled
