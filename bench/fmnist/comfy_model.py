"""A trained Fashion-MNIST denoiser as a real ComfyUI MODEL, for the per-family benchmark.

``fmnist_model_patcher`` puts the UNet of any family (unet.EDMDenoiser, families.EPSDenoiser,
families.FlowDenoiser) inside a real ``comfy.model_base.BaseModel`` with the matching ModelType, so
everything between a sampler and the network is ComfyUI's own code: CFGGuider, cond batching,
``model_sampling.calculate_input`` / ``timestep`` / ``calculate_denoised`` and ``noise_scaling``:

- edm: ModelType.EDM, ModelSamplingContinuousEDM over [0.002, 80], sigma_data 0.5; its timestep is
  ln(sigma)/4, which is the EDM net's c_noise;
- eps: ModelType.EPS, ModelSamplingDiscrete with SD1.5's betas (ComfyUI's default "linear" schedule
  is the scaled-linear sqrt-spaced one), timesteps rounded to the nearest of 1000 as in SD1.5;
- flow: ModelType.FLOW, ModelSamplingDiscreteFlow (CONST) with shift 3, multiplier 1000, as SD3.

The class of each row comes from a one-hot cross-attention context, as in testing_nodes.toy_model
(``class_conditioning``; an all-zero context is the null label). Imported only with ComfyUI on sys.path.
"""

from __future__ import annotations

from typing import Any

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import torch

from testing_nodes.toy_model import EDM_SETTINGS, ToyConfig, labels_from_context

from .families import FLOW_MULTIPLIER, FLOW_SHIFT, c_noise_of


class FMNISTLatent(comfy.latent_formats.LatentFormat):
    """The 1-channel 28x28 pixel space, as a latent format (training nodes size their noise from it)."""

    latent_channels = 1
    spacial_downscale_ratio = 1


class FMNISTConfig(ToyConfig):
    latent_format = FMNISTLatent


class FMNISTNet(torch.nn.Module):
    """The ``diffusion_model``: ComfyUI's model input and timestep in, the family's raw output out."""

    def __init__(self, denoiser: torch.nn.Module) -> None:
        super().__init__()
        self.net = denoiser.net
        self.family = getattr(denoiser, "family", "edm")
        self.calls = 0

    @property
    def dtype(self) -> torch.dtype:
        return self.net.conv_in.weight.dtype

    def forward(
        self, xc: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        self.calls += 1
        t = timesteps.reshape(-1).float().expand(xc.shape[0])
        c_noise = t if self.family == "edm" else c_noise_of(t)  # EDM's timestep already is ln(sigma)/4
        labels = labels_from_context(context, xc.shape[0]).to(xc.device)
        return self.net(xc.to(self.dtype), c_noise.to(self.dtype), labels).float()


def _model_type(family: str) -> tuple[Any, dict[str, float]]:
    types = comfy.model_base.ModelType
    if family == "edm":
        return types.EDM, dict(EDM_SETTINGS)
    if family == "eps":
        return types.EPS, {}
    if family == "flow":
        return types.FLOW, {"shift": FLOW_SHIFT, "multiplier": FLOW_MULTIPLIER}
    raise ValueError(f"unknown model family {family!r}")


def fmnist_model_patcher(denoiser: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI MODEL around a loaded Fashion-MNIST denoiser (bench.fmnist.unet.load_denoiser)."""
    family = getattr(denoiser, "family", "edm")
    model_type, settings = _model_type(family)
    config = FMNISTConfig(FMNISTConfig.unet_config)
    config.sampling_settings = settings
    device = comfy.model_management.get_torch_device()
    model = comfy.model_base.BaseModel(config, model_type=model_type, device=device)
    model.diffusion_model = FMNISTNet(denoiser)
    model.eval()
    return comfy.model_patcher.ModelPatcher(
        model, load_device=device, offload_device=comfy.model_management.unet_offload_device()
    )
