"""Real-image data with an exact denoiser: a Gaussian mixture fitted to scikit-learn's digits.

scikit-learn ships the 1,797 8x8 digit images (UCI), so the demo and the benchmarks
need no download. Pixels are scaled to [-1, 1]; the EDM sigma range is used.
"""

from __future__ import annotations

import math

import torch

from .mixture import GaussianMixture, fit_mixture
from .solver import sample_epd

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
DIGIT_SHAPE = (8, 8)


def digits_mixture(per_class: int = 4, seed: int = 0) -> GaussianMixture:
    """A 10 x per_class component mixture over the digits (float64)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("the digits data comes from scikit-learn: pip install scikit-learn") from err
    digits = load_digits()
    data = torch.tensor(digits.data, dtype=torch.float64) / 8.0 - 1.0
    return fit_mixture(data, torch.tensor(digits.target), per_class=per_class, seed=seed)


class ExactModel:
    """The k-diffusion denoiser contract around a mixture, with optional classifier-free guidance.

    classes [B] are tiled cyclically over a K*B batch, the way ComfyUI repeats
    conditioning (comfy.utils.repeat_to_batch_size): a B-major stacking would pair
    rows with the wrong class. ``calls`` counts sequential model rounds.
    """

    def __init__(
        self, mixture: GaussianMixture, classes: torch.Tensor | None = None, cfg: float = 1.0, flow: bool = False
    ):
        self.mixture, self.classes, self.cfg, self.flow, self.calls = mixture, classes, cfg, flow, 0

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        fn = self.mixture.denoise_flow if self.flow else self.mixture.denoise
        return fn(x, sigma, classes)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        self.calls += 1
        sigma = sigma.reshape(-1).expand(x.shape[0])
        if self.classes is None:
            return self._denoise(x, sigma, None)
        cond = self._denoise(x, sigma, self.classes.repeat(x.shape[0] // len(self.classes)))
        if self.cfg == 1.0:
            return cond
        uncond = self._denoise(x, sigma, None)
        return uncond + self.cfg * (cond - uncond)


def start_noise(batch: int, seed: int = 0, dim: int = 64) -> torch.Tensor:
    """x at sigma_max: sigma_max * z, z ~ N(0, I), seeded."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=gen, dtype=torch.float64) * SIGMA_MAX


def reference_solution(model: ExactModel, x: torch.Tensor, steps: int = 400) -> torch.Tensor:
    """A converged solution at sigma = 0: second-order steps on 400 log-spaced sigmas down to 1e-4."""
    sigmas = torch.exp(torch.linspace(math.log(SIGMA_MAX), math.log(1e-4), steps + 1, dtype=torch.float64))
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sample_epd(model, x, sigmas, num_points=1, form="data", tail="keep")


def solution_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over samples of the L2 distance over all pixels."""
    return (x - ref).flatten(1).norm(dim=1).mean().item()
