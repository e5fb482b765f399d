"""A real ComfyUI sampling path over an exact denoiser, for the adapter tests.

``make_guider`` returns a real ``comfy.samplers.CFGGuider`` whose ``inner_model`` is a
small stand-in for ``BaseModel``: everything between KSAMPLER and ``apply_model`` is
ComfyUI's own code (KSamplerX0Inpaint, CFG, calc_cond_batch, per-sample cond
repetition). ``apply_model`` answers with the exact posterior mean of a Gaussian per
class (epd_core.mixture), reading each row's class from its conditioning tensor, so a
row that meets another sample's condition gives a visibly wrong result. Class -1 is the
unconditional (negative) prompt: the whole mixture.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import comfy.conds
import comfy.model_sampling
import comfy.samplers
import torch
from comfy.model_base import BaseModel
from comfyui_epd.epd_core.mixture import GaussianMixture

SHAPE = (4, 2, 2)  # latent channels, height, width: D = 16
DIM = math.prod(SHAPE)
STD = 0.5
CLASS_MEANS = (-1.5, 1.0, 2.5)
F64 = torch.float64


def class_means() -> torch.Tensor:
    """[J, D]: one mean per class, not constant across dimensions."""
    ramp = 0.1 * torch.arange(DIM, dtype=F64)
    return torch.stack([m + ramp for m in CLASS_MEANS])


MIX = GaussianMixture(
    log_weights=torch.full((len(CLASS_MEANS),), -math.log(len(CLASS_MEANS)), dtype=F64),
    means=class_means(),
    eigvecs=torch.eye(DIM, dtype=F64).expand(len(CLASS_MEANS), DIM, DIM).clone(),
    eigvals=torch.full((len(CLASS_MEANS), DIM), STD**2, dtype=F64),
    labels=torch.arange(len(CLASS_MEANS)),
)


def model_sampling(schedule: str = "ModelSamplingDiscrete", prediction: str = "EPS", **parameters: Any) -> Any:
    """A real model_sampling object, combined from ComfyUI's classes the way model_base does."""
    ms = comfy.model_sampling
    cls = type(f"{schedule}_{prediction}", (getattr(ms, schedule), getattr(ms, prediction)), {})
    obj = cls()
    if parameters:
        obj.set_parameters(**parameters)
    return obj


def exact_denoise(model_sampling: Any, x: torch.Tensor, sigma: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """E[x0 | x, class] row by row, computed on the CPU in float64; flow models see x_t = (1 - t) x0 + t eps."""
    flow = isinstance(model_sampling, comfy.model_sampling.CONST)
    x64, s64, out = x.cpu().to(F64), sigma.cpu().to(F64), torch.empty(x.shape, dtype=F64)
    classes = classes.cpu()
    for rows, cls in ((classes >= 0, classes), (classes < 0, None)):
        if rows.any():
            c = None if cls is None else cls[rows]
            if flow:
                out[rows] = MIX.denoise_flow(x64[rows], s64[rows].clamp(max=1 - 1e-6), c)
            else:
                out[rows] = MIX.denoise(x64[rows], s64[rows], c)
    return out.to(x.device, x.dtype)


def exact_solution(model_sampling: Any, x: torch.Tensor, sigma: float, classes: torch.Tensor) -> torch.Tensor:
    """x0 reached by the probability-flow ODE from x at ``sigma`` down to 0, per class (closed form)."""
    m = MIX.means[classes].reshape(x.shape).to(F64)
    x = x.to(F64)
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        # y = x / (1 - t) is VE with sigma = t / (1 - t); (y - m) / sqrt(s^2 + sigma^2) is conserved.
        return m + STD * (x - (1 - sigma) * m) / math.sqrt(STD**2 * (1 - sigma) ** 2 + sigma**2)
    return m + (x - m) * STD / math.sqrt(STD**2 + sigma**2)


class FakePatcher:
    """The few ModelPatcher methods that CFGGuider and calc_cond_batch call."""

    def __init__(self, model: FakeBaseModel) -> None:
        self.model = model
        self.model_options: dict[str, Any] = {"transformer_options": {}}

    def get_model_object(self, name: str) -> Any:
        return getattr(self.model, name)

    def is_dynamic(self) -> bool:
        return False

    def prepare_state(self, timestep: torch.Tensor) -> None:
        return None

    def get_free_memory(self, device: Any) -> int:
        return 1 << 40

    def apply_hooks(self, hooks: Any = None, transformer_options: Any = None, force_apply: bool = False) -> dict:
        return {}


class FakeBaseModel:
    """What the sampling path reads from a BaseModel; apply_model is exact and records its batches."""

    scale_latent_inpaint = BaseModel.scale_latent_inpaint  # ComfyUI's own inpaint noise scaling

    def __init__(self, model_sampling: Any, model_config: Any = None) -> None:
        self.model_sampling = model_sampling
        self.model_config = model_config
        self.current_patcher = FakePatcher(self)
        self.calls: list[tuple[int, torch.Tensor]] = []

    def memory_required(self, input_shape: Any, cond_shapes: Any = None) -> int:
        return 0

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, c_crossattn: torch.Tensor, **_: Any) -> torch.Tensor:
        self.calls.append((x.shape[0], t.detach().clone()))
        return exact_denoise(self.model_sampling, x, t, c_crossattn[:, 0].round().long())


def class_cond(classes: torch.Tensor) -> list[dict[str, Any]]:
    """A processed conditioning list whose per-sample tensor carries each row's class."""
    tensor = classes.to(F64)[:, None]
    return [{"model_conds": {"c_crossattn": comfy.conds.CONDRegular(tensor)}, "uuid": uuid.uuid4()}]


def make_guider(model_sampling: Any, classes: torch.Tensor, cfg: float = 1.0, model_config: Any = None):
    """A real CFGGuider around FakeBaseModel with per-sample positive conds and an unconditional negative."""
    base = FakeBaseModel(model_sampling, model_config)
    guider = comfy.samplers.CFGGuider(base.current_patcher)
    guider.inner_model = base
    guider.conds = {"positive": class_cond(classes), "negative": class_cond(torch.full_like(classes, -1))}
    guider.set_cfg(cfg)
    return guider


def run(
    sampler: Any,
    guider: Any,
    sigmas: torch.Tensor,
    noise: torch.Tensor,
    latent: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    model_options: dict | None = None,
    callback: Any = None,
):
    """KSAMPLER.sample as CFGGuider.inner_sample calls it; returns (samples, callback records)."""
    records: list[tuple[int, int, int, int]] = []

    def record(i: int, denoised: torch.Tensor, x: torch.Tensor, total: int) -> None:
        records.append((i, denoised.shape[0], x.shape[0], total))
        if callback is not None:
            callback(i, denoised, x, total)

    latent = torch.zeros_like(noise) if latent is None else latent
    options = {"transformer_options": {"sample_sigmas": sigmas}, **(model_options or {})}
    extra_args = {"model_options": options, "seed": 0}
    out = sampler.sample(guider, sigmas, extra_args, record, noise, latent, mask, True)
    return out, records


def noise(batch: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    """Unit Gaussian latent noise [B, *SHAPE]."""
    return torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)
