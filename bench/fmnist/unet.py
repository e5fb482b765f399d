"""A compact class-conditional UNet with EDM preconditioning for 28x28 Fashion-MNIST.

Preconditioning follows Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based
Generative Models", Table 1 ("Ours"): D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) with
c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
c_in = 1 / sqrt(sigma^2 + sigma_data^2), c_noise = ln(sigma) / 4. Written from the paper; no code
from NVlabs/edm (CC BY-NC-SA) is used. Independent of ``epd_core``: the denoiser is a plain
callable with the k-diffusion contract ``(x, sigma, labels=None) -> x0``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_state_strict, read_checkpoint

FORMAT = "fmnist-edm-unet"
SIGMA_DATA = 0.5
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "fmnist_edm.safetensors"


@dataclass(frozen=True)
class UNetConfig:
    """Architecture; stored as JSON in the weight file so the loader rebuilds the same network."""

    img_resolution: int = 28  # pixels per side; must be divisible by 2 ** (len(channels) - 1)
    img_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 128)  # feature channels per resolution level
    blocks: int = 1  # residual blocks per level in the encoder (the decoder has blocks + 1)
    emb_dim: int = 128  # noise/label embedding width
    num_classes: int = 10  # 0 = unconditional; label ``num_classes`` is the null (unconditional) class
    attn_bottleneck: bool = True  # one self-attention block at the lowest resolution
    groups: int = 8  # GroupNorm groups
    max_freq: float = 32.0  # highest frequency of the sinusoidal c_noise embedding (lowest is 1/4)

    def __post_init__(self) -> None:
        levels = len(self.channels)
        problems = []
        if levels < 1 or any(c < 1 or c % self.groups for c in self.channels):
            problems.append(f"channels {self.channels} must be non-empty multiples of groups={self.groups}")
        if self.img_resolution % (2 ** (levels - 1)):
            problems.append(f"img_resolution {self.img_resolution} is not divisible by 2**{levels - 1}")
        if self.blocks < 1 or self.emb_dim < 8 or self.emb_dim % 4 or self.num_classes < 0:
            problems.append(f"blocks={self.blocks} >= 1, emb_dim={self.emb_dim} >= 8 and % 4, num_classes >= 0")
        if problems:
            raise ValueError("UNetConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"UNetConfig: unknown keys {unknown}; valid keys are {sorted(cls.__dataclass_fields__)}")
        data = dict(data)
        if "channels" in data:
            data["channels"] = tuple(data["channels"])
        return cls(**data)


def noise_embedding(c_noise: torch.Tensor, dim: int, max_freq: float) -> torch.Tensor:
    """Sinusoidal features [B, dim] of c_noise [B]; frequencies geometric in [1/4, max_freq] rad per unit."""
    freqs = torch.exp(torch.linspace(math.log(0.25), math.log(max_freq), dim // 2, device=c_noise.device))
    angles = c_noise.float()[:, None] * freqs[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the embedding as a per-channel scale and shift; zero-initialised output."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = nn.functional.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of one feature map, residual."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = nn.functional.scaled_dot_product_attention(q, k, v)  # [B, HW, C]
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """F(x_in, c_noise, labels) -> [B, C, H, W]; skips after every encoder block, nearest upsampling."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.map_noise = nn.Sequential(
            nn.Linear(cfg.emb_dim, cfg.emb_dim), nn.SiLU(), nn.Linear(cfg.emb_dim, cfg.emb_dim)
        )
        self.map_label = nn.Embedding(cfg.num_classes + 1, cfg.emb_dim) if cfg.num_classes else None
        self.conv_in = nn.Conv2d(cfg.img_channels, cfg.channels[0], 3, padding=1)
        self.down, self.downsample, skip_channels = nn.ModuleList(), nn.ModuleList(), [cfg.channels[0]]
        c_prev = cfg.channels[0]
        for level, c in enumerate(cfg.channels):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks):
                blocks.append(ResBlock(c_prev, c, cfg.emb_dim, cfg.groups))
                c_prev = c
                skip_channels.append(c)
            self.down.append(blocks)
            if level + 1 < len(cfg.channels):
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_channels.append(c)
        self.mid1 = ResBlock(c_prev, c_prev, cfg.emb_dim, cfg.groups)
        self.mid_attn = SelfAttention(c_prev, cfg.groups) if cfg.attn_bottleneck else nn.Identity()
        self.mid2 = ResBlock(c_prev, c_prev, cfg.emb_dim, cfg.groups)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, c in reversed(list(enumerate(cfg.channels))):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks + 1):
                blocks.append(ResBlock(c_prev + skip_channels.pop(), c, cfg.emb_dim, cfg.groups))
                c_prev = c
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(cfg.groups, c_prev)
        self.conv_out = nn.Conv2d(c_prev, cfg.img_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def embed(self, c_noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Embedding [B, emb_dim] of c_noise [B] and labels [B] (None or -1 = the null class)."""
        emb = self.map_noise(noise_embedding(c_noise, self.config.emb_dim, self.config.max_freq))
        if self.map_label is not None:
            null = self.config.num_classes
            if labels is None:
                labels = torch.full_like(c_noise, null, dtype=torch.long)
            emb = emb + self.map_label(torch.where(labels < 0, null, labels).to(c_noise.device))
        return nn.functional.silu(emb)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(c_noise, labels)
        h = self.conv_in(x)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for level, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if level < len(self.upsample):
                h = self.upsample[level](nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


def edm_coefficients(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) of Karras et al. (2022) Table 1 for sigma [B]."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt(), sigma.log() / 4


class EDMDenoiser(nn.Module):
    """D(x; sigma, labels) -> x0 estimate [B, C, H, W], for x [B, C, H, W] and sigma scalar or [B]."""

    def __init__(
        self, net: UNet, sigma_data: float = SIGMA_DATA, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX
    ) -> None:
        super().__init__()
        self.net, self.sigma_data, self.sigma_min, self.sigma_max = net, sigma_data, sigma_min, sigma_max

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1, 1, 1) for c in edm_coefficients(sigma, self.sigma_data))
        dtype = self.net.conv_in.weight.dtype
        f_x = self.net((c_in * x).to(dtype), c_noise.reshape(-1).to(dtype), labels)
        return c_skip * x + c_out * f_x.to(x.dtype)


def guided(denoiser: Callable[..., torch.Tensor], labels: torch.Tensor, cfg: float) -> Callable[..., torch.Tensor]:
    """Classifier-free guidance (Ho & Salimans 2022): D_u + cfg (D_c - D_u) as one ``(x, sigma)`` callable."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor | float, **_: Any) -> torch.Tensor:
        if cfg == 1.0:
            return denoiser(x, sigma, labels=labels)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        both = denoiser(torch.cat([x, x]), sigma.repeat(2), labels=torch.cat([labels, torch.full_like(labels, -1)]))
        cond, uncond = both.chunk(2)
        return uncond + cfg * (cond - uncond)

    return denoise


def build_denoiser(config: UNetConfig, sigma_data: float = SIGMA_DATA) -> EDMDenoiser:
    """A freshly initialised denoiser for ``config``."""
    return EDMDenoiser(UNet(config), sigma_data=sigma_data)


def load_denoiser(path: str | os.PathLike[str]) -> nn.Module:
    """The EMA denoiser stored at ``path`` (safetensors only; EDM, or the family its metadata names), eval mode, no grad."""
    from .families import wrap

    state, config, info = read_checkpoint(path, FORMAT)
    family = info.get("family", "edm")
    if family == "edm":
        denoiser = build_denoiser(UNetConfig.from_dict(config), sigma_data=float(info.get("sigma_data", SIGMA_DATA)))
        denoiser.sigma_min = float(info.get("sigma_min", SIGMA_MIN))
        denoiser.sigma_max = float(info.get("sigma_max", SIGMA_MAX))
    else:
        denoiser = wrap(family, UNet(UNetConfig.from_dict(config)))
    load_state_strict(denoiser.net, state, path)
    denoiser.info = info
    return denoiser.eval().requires_grad_(False)


def config_dict(config: UNetConfig) -> dict[str, Any]:
    """The JSON-ready form of ``config``."""
    data = asdict(config)
    data["channels"] = list(config.channels)
    return data
