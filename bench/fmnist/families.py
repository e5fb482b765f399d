"""The two non-EDM parameterisations of the Fashion-MNIST UNet: SD1.5-style EPS and SD3-style flow.

Each family wraps the same ``UNet`` as ``EDMDenoiser`` does, and computes exactly what ComfyUI's
``BaseModel._apply_model`` computes with the matching ``model_sampling`` (ComfyUI 0.17,
``comfy/model_sampling.py``), so a file trained here behaves in the benchmark as an SD1.5 or SD3 model would:

- ``eps``: ``ModelSamplingDiscrete`` + ``EPS`` with SD1.5's scaled-linear betas (0.00085 -> 0.012, 1000
  steps). Input ``x / sqrt(sigma^2 + 1)``, timestep = the index of the NEAREST discrete log-sigma (ComfyUI
  rounds; it does not interpolate), output eps, ``x0 = x - sigma eps``. Trained with DDPM's simple loss on
  uniform integer timesteps, as SD1.5 was.
- ``flow``: ``ModelSamplingDiscreteFlow`` + ``CONST`` with shift 3 and multiplier 1000, as SD3. Input x,
  timestep ``1000 sigma``, output the velocity ``noise - x0``, ``x0 = x - sigma v``. Trained on
  ``x = (1 - sigma) x0 + sigma noise`` with sigma = shift(sigmoid(N(0, 1))) (SD3's logit-normal times,
  shifted to where a shift-3 sampler spends its steps).

In both the net sees ``c_noise = timestep / 250 - 2`` (range [-2, 2], near the EDM net's ln(sigma)/4 range),
an internal choice of these fixtures like SD's own timestep embedding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .unet import UNet

FAMILIES = ("edm", "eps", "flow")
FLOW_SHIFT = 3.0
FLOW_MULTIPLIER = 1000.0


def sd15_sigmas() -> torch.Tensor:
    """SD1.5's 1000 discrete sigmas, ascending, float32 (ComfyUI's ModelSamplingDiscrete default)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt().float()


def flow_sigma(t: torch.Tensor, shift: float = FLOW_SHIFT) -> torch.Tensor:
    """ComfyUI's time_snr_shift: the sigma of time t in [0, 1] under ``shift``."""
    return shift * t / (1 + (shift - 1) * t)


def c_noise_of(timestep: torch.Tensor) -> torch.Tensor:
    """The net's noise input for a model timestep in [0, 1000]."""
    return timestep / 250.0 - 2.0


class TimestepDenoiser(nn.Module):
    """What the EPS and flow families share: the net called on ComfyUI's model input and timestep."""

    net: UNet

    def raw(self, x_in: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The diffusion model proper (eps or velocity) from the model input and the model timestep."""
        dtype = self.net.conv_in.weight.dtype
        return self.net(x_in.to(dtype), c_noise_of(timestep).to(dtype), labels).to(x_in.dtype)


class EPSDenoiser(TimestepDenoiser):
    """SD1.5-style EPS model on the discrete scaled-linear schedule: D(x; sigma, labels) -> x0."""

    family = "eps"

    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("sigmas", sd15_sigmas(), persistent=False)
        self.sigma_min, self.sigma_max = float(self.sigmas[0]), float(self.sigmas[-1])

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Index of the nearest discrete log-sigma, as ComfyUI's ModelSamplingDiscrete.timestep."""
        dists = sigma.log().to(self.sigmas.device)[None, :] - self.sigmas.log()[:, None]
        return dists.abs().argmin(dim=0).to(sigma.device).float()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        s = sigma.reshape(-1, 1, 1, 1)
        eps = self.raw(x / (s**2 + 1).sqrt(), self.timestep(sigma), labels)
        return x - s * eps


class FlowDenoiser(TimestepDenoiser):
    """SD3-style rectified-flow model (velocity output, shift 3): D(x; sigma, labels) -> x0."""

    family = "flow"

    def __init__(self, net: UNet, shift: float = FLOW_SHIFT) -> None:
        super().__init__()
        self.net, self.shift = net, shift
        self.sigma_min = float(flow_sigma(torch.tensor(1.0 / FLOW_MULTIPLIER), shift))
        self.sigma_max = 1.0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        return x - sigma.reshape(-1, 1, 1, 1) * self.raw(x, sigma * FLOW_MULTIPLIER, labels)


def eps_loss(denoiser: EPSDenoiser, x0: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """DDPM's simple loss ||eps_hat - eps||^2 at uniform integer timesteps."""
    t = torch.randint(0, len(denoiser.sigmas), (x0.shape[0],), generator=gen)
    sigma = denoiser.sigmas[t].reshape(-1, 1, 1, 1)
    noise = torch.randn(x0.shape, generator=gen)
    eps = denoiser.raw((x0 + sigma * noise) / (sigma**2 + 1).sqrt(), t.float(), labels)
    return ((eps.float() - noise) ** 2).mean()


def flow_loss(denoiser: FlowDenoiser, x0: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rectified-flow velocity loss ||v_hat - (noise - x0)||^2 at shifted logit-normal times."""
    sigma = flow_sigma(torch.sigmoid(torch.randn(x0.shape[0], generator=gen)), denoiser.shift)
    sigma = sigma.clamp(denoiser.sigma_min, 1.0)
    noise = torch.randn(x0.shape, generator=gen)
    s = sigma.reshape(-1, 1, 1, 1)
    v = denoiser.raw((1 - s) * x0 + s * noise, sigma * FLOW_MULTIPLIER, labels)
    return ((v.float() - (noise - x0)) ** 2).mean()


def wrap(family: str, net: UNet) -> nn.Module:
    """The denoiser of ``family`` around ``net``; 'edm' is unet.EDMDenoiser."""
    from .unet import EDMDenoiser

    if family == "edm":
        return EDMDenoiser(net)
    if family == "eps":
        return EPSDenoiser(net)
    if family == "flow":
        return FlowDenoiser(net)
    raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")


def loss_for(family: str) -> Any:
    """The training loss of ``family``."""
    from .train_denoiser import edm_loss

    return {"edm": edm_loss, "eps": eps_loss, "flow": flow_loss}[family]


def family_info(denoiser: nn.Module) -> dict[str, Any]:
    """What a weight file records about its parameterisation."""
    family = getattr(denoiser, "family", "edm")
    info: dict[str, Any] = {"family": family, "sigma_min": denoiser.sigma_min, "sigma_max": denoiser.sigma_max}
    if family == "eps":
        info["comfyui"] = "ModelSamplingDiscrete, EPS, scaled_linear 0.00085-0.012, 1000 steps (SD1.5)"
    elif family == "flow":
        info["comfyui"] = f"ModelSamplingDiscreteFlow, CONST, shift {denoiser.shift}, multiplier {FLOW_MULTIPLIER:g}"
    else:
        info["sigma_data"] = denoiser.sigma_data
    return info
