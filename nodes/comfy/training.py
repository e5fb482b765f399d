"""ComfyUI boundary, training: runs an epd_core training loop inside ComfyUI's sampling stack.

The loop is driven through a real CFGGuider (so conds,
ControlNets, patches and model loading behave as in sampling) by a KSAMPLER whose function
(``run_loop``) hands the loop the denoiser every sampler function gets. Prompts run under ``torch.inference_mode``; the
loop runs under ``inference_mode(False)`` with grad enabled and ``in_training`` set. Autograd
cannot save inference tensors, so every conditioning tensor is cloned and the frozen model's
inference tensors are swapped for ordinary ones (``autograd_safe``). A Cancel, from the
node's own check or from inside any model call, keeps the best table on disk (``BestTable``)
and then stops the prompt as ComfyUI users expect.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import comfy.model_management
import comfy.samplers
import comfy.utils
import torch

from ...epd_core.params import EPDParams
from ...epd_core.table_io import save_table
from . import folders, sampling
from .timestep_grad import timestep_gradients

log = logging.getLogger(__name__)

TRAIN_EVENT = "epd.train"
AUTOSAVE_FOLDER = "autosave"  # under models/epd, so EPD Load Table lists the autosaved tables
Interrupted = comfy.model_management.InterruptProcessingException
# Errors a node lets through untouched: ComfyUI itself reports a Cancel and an out-of-memory error.
PASS_THROUGH: tuple[type[BaseException], ...] = (Interrupted, comfy.model_management.OOM_EXCEPTION)


def clone_tensors(value: Any) -> Any:
    """A copy of nested conds with every tensor cloned (inference tensors cannot be saved for backward)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: clone_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clone_tensors(v) for v in value)
    if hasattr(value, "cond") and isinstance(getattr(value, "cond", None), torch.Tensor):
        # CONDRegular & co. (comfy.conds) copy themselves with _copy_with, as ComfyUI's own code does
        return value._copy_with(value.cond.clone()) if hasattr(value, "_copy_with") else value
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
def grad_mode() -> Iterator[None]:
    """Autograd on inside a prompt (ComfyUI runs every node under torch.inference_mode)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextlib.contextmanager
def training_mode() -> Iterator[None]:
    """grad_mode with ``in_training`` set (differentiable model paths), reset even when the loop fails or is cancelled."""
    with grad_mode():
        comfy.model_management.in_training = True
        try:
            yield
        finally:
            comfy.model_management.in_training = False


def autograd_safe(module: torch.nn.Module) -> int:
    """Swap every inference tensor among ``module``'s parameters and buffers for an ordinary one.

    ComfyUI runs each prompt under torch.inference_mode, so a loader's weights are inference
    tensors, and autograd refuses to save them for backward ("Inference tensors cannot be saved
    for backward"); yet the table's gradient flows through the frozen model's forward. ComfyUI's
    TrainLoraNode meets this with a weight wrapper on every comfy op, which makes each forward
    copy its weight (ops.cast_bias_weight, copy=True): those copies are saved for backward, so a
    second copy of the weights lives through every backward, and buffers or non-comfy layers
    are not covered. Here each tensor is replaced once, one at a time, with the same values:
    the peak is the model plus its largest tensor, nothing is copied whole. The swap happens in the
    shared module (as ComfyUI's own weight patching replaces Parameters), so ComfyUI's cache and
    every other node see the same values; requires_grad flags and ties are kept. Must run
    outside inference mode. Returns how many tensors were swapped.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("autograd_safe must run outside torch.inference_mode (inside training_mode())")
    # id of the old tensor -> its ordinary copy (keeps ties). The old tensors are not held, so each
    # is freed as soon as its last holder is swapped (no second copy of the model); an id cannot be
    # reused meanwhile, since every tensor still to visit was alive before the loop began.
    swapped: dict[int, torch.Tensor] = {}
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for name, old in store.items():
                if old is None or not old.is_inference():
                    continue
                if id(old) not in swapped:  # an inference Parameter cannot be fixed in place: its
                    new = old.detach().clone()  # version counter stays off even after .data is set
                    is_param = isinstance(old, torch.nn.Parameter)
                    swapped[id(old)] = torch.nn.Parameter(new, requires_grad=old.requires_grad) if is_param else new
                store[name] = swapped[id(old)]
    return len(swapped)


def run_loop(model, x, sigmas, extra_args=None, callback=None, disable=None, *, loop, result: list):
    """KSAMPLER function that runs ``loop(denoiser)`` on the guider's denoiser instead of sampling.

    ``model`` is what every EPD sampler function gets (KSamplerX0Inpaint around the CFGGuider),
    so training sees the same cond, CFG and model path as sampling. Conds are cloned and the
    loaded model made autograd-safe first; the loop's return value is appended to ``result``.
    """
    guider = model.inner_model
    guider.conds = clone_tensors(guider.conds)
    count = autograd_safe(guider.inner_model)  # the BaseModel, loaded by prepare_sampling
    if count:
        log.info("EPD: %d inference tensors of the frozen model made ordinary for autograd.", count)
    args = dict(extra_args or {})

    def denoiser(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        return model(x, sigma, **args)

    with timestep_gradients(guider.inner_model.model_sampling):  # SD1.5/SDXL: time carries a gradient
        result.append(loop(denoiser))
    return x


def run_in_guider(
    model: Any, positive: Any, negative: Any, cfg: float, sigmas: torch.Tensor, latent_shape, loop
) -> Any:
    """Run ``loop(denoiser)`` inside CFGGuider.sample on ``model``; returns the loop's result."""
    result: list[Any] = []
    sampler = comfy.samplers.KSAMPLER(run_loop, extra_options={"loop": loop, "result": result})
    latent = torch.zeros(latent_shape)
    with training_mode():
        sampling.make_guider(model, positive, negative, cfg).sample(
            latent, latent.clone(), sampler, sigmas.float(), disable_pbar=True, seed=0
        )
    return result[0]


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


def prompt_server() -> Any:
    """ComfyUI's PromptServer when running inside its server, else None (tests, scripts)."""
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)


class Reporter:
    """Progress bar, live websocket loss events and interruption for a training node.

    Events go to the client that queued the prompt only; a prompt queued without a client id
    gets none, as ComfyUI's own per-node messages.
    """

    def __init__(self, total: int, node_id: str | None, node_type: str) -> None:
        self.total, self.node_id, self.node_type = total, node_id, node_type
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id)
        self.server = prompt_server()
        self.send_failed = False

    def update(self, step: int, preview: Any = None, **values: float) -> None:
        """Progress (with an optional ProgressBar preview tuple) and a live chart event."""
        self.bar.update_absolute(step, self.total, preview)
        client = getattr(self.server, "client_id", None)
        if client is None:
            return
        payload = {"node": self.node_id, "type": self.node_type, "step": step, "total": self.total, **values}
        try:
            self.server.send_sync(TRAIN_EVENT, payload, client)
        except Exception:  # the chart is a nicety: training goes on, but the failure is logged once
            if not self.send_failed:
                log.warning("EPD: could not send the live chart event %s", TRAIN_EVENT, exc_info=True)
            self.send_failed = True

    def should_stop(self) -> bool:
        """Raise ComfyUI's InterruptProcessingException once Cancel was pressed (see BestTable)."""
        comfy.model_management.throw_exception_if_processing_interrupted()
        return False


def new_autosave_path(stem: str) -> str:
    """models/epd/autosave/<stem>.safetensors, or <stem>_2, _3, ... : a run never overwrites an earlier one's table."""
    folder = os.path.join(folders.default_dir(), AUTOSAVE_FOLDER)
    os.makedirs(folder, exist_ok=True)
    for n in itertools.count(1):
        path = os.path.join(folder, stem + (f"_{n}" if n > 1 else "") + ".safetensors")
        try:
            with open(path, "x"):  # claim the name atomically; the table replaces the empty file at once
                return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


class BestTable:
    """A training node's best table, kept on disk in models/epd/autosave: at the start, at every
    new best and on Cancel, each write atomic. ``keep`` re-raises the interrupt after saving, so
    a Cancel stops the prompt (nodes downstream do not run) and loses no trained work.
    """

    def __init__(self, node: str, node_id: str | None, start: EPDParams, describe: Callable[..., dict]) -> None:
        self.path = new_autosave_path(
            f"{node.lower().replace(' ', '_')}_{time.strftime('%Y%m%d-%H%M%S')}_node{node_id or 'x'}"
        )
        self.node, self.describe = node, describe
        self.table, self.iterations = start, 0
        self.write(cancelled=False)
        log.info("%s: the best table so far is kept in %s", node, self.path)

    def write(self, cancelled: bool) -> EPDParams:
        """The best table with the node's metadata, saved; returns it."""
        meta = self.describe(iterations=self.iterations, cancelled=cancelled)
        table = self.table.replace(metadata={**dict(self.table.metadata), **meta, "autosave": self.path})
        save_table(table, self.path)
        return table

    def offer(self, table: EPDParams, iterations: int) -> None:
        """Record the loop's best after ``iterations``; writes only when it is a new table."""
        changed = table is not self.table
        self.table, self.iterations = table, iterations
        if changed:
            self.write(cancelled=False)

    @contextlib.contextmanager
    def keep(self) -> Iterator[None]:
        """Save the best table on an interrupt from anywhere inside (own check or a model call), then re-raise."""
        try:
            yield
        except Interrupted:
            self.write(cancelled=True)
            log.warning(
                "%s: cancelled after %d iterations; the best table is in %s", self.node, self.iterations, self.path
            )
            raise
