"""A real ComfyUI MODEL with an exact denoiser, for tests and benchmarks.

``toy_model_patcher`` builds a ``comfy.model_patcher.ModelPatcher`` around a real
``comfy.model_base.BaseModel`` whose ``diffusion_model`` answers with the exact posterior
mean E[x0 | x] of a Gaussian mixture (epd_core.mixture). Everything between a sampler and
the network is ComfyUI's own code: CFGGuider, sampling_function, calc_cond_batch (cond
repetition and cond/uncond concatenation), apply_model and the model_sampling
conversions. The network undoes those conversions: it decodes sigma from the timestep
ComfyUI gives it and inverts ``calculate_input`` / ``calculate_denoised`` (both are linear
in x and in the network output for every prediction type), so the denoised ComfyUI hands
the sampler is E[x0 | x] up to float32 precision (``apply_model`` casts the output to float32).

Latents are any shape with D = mixture.dim values per sample: [B, 4, 4, 4] (EmptyLatentImage
at 32x32) or [B, 1, 8, 8] for the 64-dim digits mixture. The class of each row is read from
its cross-attention context (``class_conditioning``); an all-zero context is unconditional.
Exactness holds for the continuous kinds ("edm", "flow"); "eps" (ModelSamplingDiscrete,
like SD1.x) rounds every sigma to one of 1000 training timesteps, as real discrete models do.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models_base
import torch

CONTEXT_DIM = 16  # one-hot class label in a [batch, 1, CONTEXT_DIM] cross-attention context
KINDS = ("edm", "flow", "eps")
EDM_SETTINGS = {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5}
MIXTURE_FIELDS = ("log_weights", "means", "eigvecs", "eigvals", "labels")


class ToyConfig(comfy.supported_models_base.BASE):
    """Model config that skips UNet creation; the exact denoiser is attached afterwards."""

    unet_config: ClassVar[dict[str, Any]] = {"disable_unet_model_creation": True}
    unet_extra_config: ClassVar[dict[str, Any]] = {}
    latent_format = comfy.latent_formats.LatentFormat
    memory_usage_factor = 1.0


def labels_from_context(context: torch.Tensor | None, batch: int) -> torch.Tensor:
    """Class label per row from a [batch, tokens, CONTEXT_DIM] context; -1 = unconditional (all zero)."""
    if context is None:
        return torch.full((batch,), -1, dtype=torch.long)
    vec = context.detach().double().sum(dim=1)  # [batch, CONTEXT_DIM]
    peak, label = vec.max(dim=1)
    return torch.where(peak > 0.5, label, torch.full_like(label, -1)).cpu()


class ExactDenoiserNet(torch.nn.Module):
    """The ``diffusion_model``: model input and timestep in, the output that makes ComfyUI's
    denoised equal the mixture's exact E[x0 | x]. Counts forward calls in ``calls``."""

    def __init__(self, mixture: Any, model_sampling: Any, flow: bool) -> None:
        super().__init__()
        self._mixture = mixture
        self._sampling = [model_sampling]  # a list, so it is not registered as a submodule
        self.flow = flow
        self.calls = 0
        for name in MIXTURE_FIELDS:
            self.register_buffer(name, getattr(mixture, name).clone())

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64

    def mixture(self) -> Any:
        """The mixture on this module's device (its buffers follow ModelPatcher's moves)."""
        return dataclasses.replace(self._mixture, **{name: getattr(self, name) for name in MIXTURE_FIELDS})

    def coefficients(self, sigma: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """c_in, c_skip, c_out of ComfyUI's model_sampling at sigma [N], shaped for broadcasting."""
        sampling = self._sampling[0]
        one = torch.ones((len(sigma),) + (1,) * (ndim - 1), dtype=sigma.dtype, device=sigma.device)
        c_in = sampling.calculate_input(sigma, one)
        c_skip = sampling.calculate_denoised(sigma, torch.zeros_like(one), one)
        c_out = sampling.calculate_denoised(sigma, one, torch.zeros_like(one))
        return c_in, c_skip, c_out

    def exact(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """E[x0 | x] per row: rows with label -1 see the whole mixture, others their class."""
        mix = self.mixture()
        fn = mix.denoise_flow if self.flow else mix.denoise
        out = torch.empty_like(x)
        cond = labels >= 0
        for rows, classes in ((cond, labels[cond]), (~cond, None)):
            if rows.any():
                out[rows] = fn(x[rows], sigma[rows], None if classes is None else classes.to(x.device))
        return out

    def forward(
        self, xc: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Network output for ComfyUI's BaseModel._apply_model (computed in float64)."""
        self.calls += 1
        xc = xc.double()
        sigma = self._sampling[0].sigma(timesteps.double().reshape(-1)).double().expand(xc.shape[0])
        c_in, c_skip, c_out = self.coefficients(sigma, xc.ndim)
        x = xc / c_in
        denoised = self.exact(x, sigma, labels_from_context(context, xc.shape[0]))
        return (denoised - c_skip * x) / c_out


def _model_type(kind: str) -> tuple[Any, dict[str, float]]:
    types = comfy.model_base.ModelType
    if kind == "edm":
        return types.EDM, dict(EDM_SETTINGS)
    if kind == "flow":
        return types.FLOW, {"shift": 1.0, "multiplier": 1000}
    if kind == "eps":
        return types.EPS, {}
    raise ValueError(f"toy model kind={kind!r} is not one of {KINDS}; pick 'edm' (VE, continuous sigma) or 'flow'")


def toy_model_patcher(mixture: Any, kind: str = "edm") -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI MODEL whose denoiser is the exact posterior mean of ``mixture``.

    kind: "edm" (ModelType.EDM + ModelSamplingContinuousEDM over [0.002, 80], sigma_data 0.5),
    "flow" (ModelType.FLOW: CONST + ModelSamplingDiscreteFlow, shift 1) or "eps"
    (ModelType.EPS + ModelSamplingDiscrete, SD1.x betas; not exact between training sigmas).
    """
    model_type, settings = _model_type(kind)
    config = ToyConfig(ToyConfig.unet_config)
    config.sampling_settings = settings
    device = comfy.model_management.get_torch_device()
    model = comfy.model_base.BaseModel(config, model_type=model_type, device=device)
    model.diffusion_model = ExactDenoiserNet(mixture, model.model_sampling, flow=kind == "flow")
    model.eval()
    return comfy.model_patcher.ModelPatcher(
        model, load_device=device, offload_device=comfy.model_management.unet_offload_device()
    )


def class_context(labels: torch.Tensor | list[int] | int) -> torch.Tensor:
    """[B, 1, CONTEXT_DIM] context with a one-hot row per label (B = number of labels)."""
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.min() < 0 or labels.max() >= CONTEXT_DIM:
        raise ValueError(f"class labels must lie in [0, {CONTEXT_DIM - 1}], got {labels.tolist()}")
    return torch.nn.functional.one_hot(labels, CONTEXT_DIM).float()[:, None, :]


def class_conditioning(label: int | list[int] | torch.Tensor) -> list[list[Any]]:
    """ComfyUI CONDITIONING for one class, or one class per sample when given a list of B labels.

    A batch of labels relies on ComfyUI repeating cond tensors cyclically over the batch
    (comfy.utils.repeat_to_batch_size), so label b reaches sample b, and row k*B + b of a
    K-point EPD call as well.
    """
    return [[class_context(label), {}]]


def empty_conditioning() -> list[list[Any]]:
    """The unconditional CONDITIONING: an all-zero context (the whole mixture)."""
    return [[torch.zeros(1, 1, CONTEXT_DIM), {}]]


def denoiser_of(model_patcher: comfy.model_patcher.ModelPatcher) -> ExactDenoiserNet:
    """The exact network inside a toy MODEL (its ``calls`` counter counts forward passes)."""
    return model_patcher.model.diffusion_model
