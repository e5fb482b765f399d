"""Light models of the noised distribution p_s = p_data * N(0, s^2 I) (other-seeds.md B.4 a).

The data model is fitted on clean samples x0 [n, D] and the noise is added in closed form,
so the noise part is exact: every family is a mixture of Gaussians with covariance
diag(var_j) + W_j W_j^T, and noising at VE sigma s adds s^2 to var_j.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .flow import FlowStart, fit_flow

FAMILIES = ("gaussian", "diagonal", "lowrank", "gmm", "normalizing_flow")
MAX_FULL_DIM = 4096  # a full covariance is D x D float64: 128 MiB at this size


@dataclass(frozen=True)
class StartModel:
    """A Gaussian mixture at VE sigma ``sigma_ve``: log_weights [J], means [J, D], var [J, D], factors [J, D, r]."""

    family: str
    shape: tuple[int, ...]
    sigma_ve: float
    log_weights: torch.Tensor
    means: torch.Tensor
    var: torch.Tensor
    factors: torch.Tensor

    def __post_init__(self) -> None:
        assert self.means.shape == self.var.shape and self.factors.shape[:2] == self.means.shape
        assert math.prod(self.shape) == self.means.shape[1]


def _check(data: torch.Tensor, family: str, rank: int, components: int) -> None:
    """Raise ValueError for an empty, non-finite or too small data set, naming a family that fits."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    n, d = data.shape
    if n < 2:
        raise ValueError(f"need at least 2 reference samples to fit a distribution, got {n}")
    if not torch.isfinite(data).all():
        raise ValueError("the reference samples contain NaN or inf")
    if family == "gaussian" and n <= d:
        raise ValueError(f"a full Gaussian needs more samples than dimensions: got {n} samples of dimension {d}; "
                         f"give more than {d} samples, or choose 'lowrank' (rank < {n}) or 'diagonal'")  # fmt: skip
    if family == "gaussian" and d > MAX_FULL_DIM:
        raise ValueError(f"a full Gaussian in dimension {d} is too large (at most {MAX_FULL_DIM}); "
                         "choose 'lowrank' or 'diagonal'")  # fmt: skip
    if family == "lowrank" and not 1 <= rank < n:
        raise ValueError(f"rank must be between 1 and the sample count - 1 = {n - 1}, got {rank}")
    if family == "normalizing_flow" and (rank < 2 or n < 3 or d < 2):
        raise ValueError(f"a normalizing flow needs rank >= 2, at least 3 samples and dimension >= 2; got rank "
                         f"{rank}, {n} samples of dimension {d}; choose 'diagonal' for fewer")  # fmt: skip
    if family == "gmm" and n < 2 * components:
        raise ValueError(f"a GMM with {components} components needs at least {2 * components} samples, got {n}; "
                         "lower components or choose 'diagonal'")  # fmt: skip


def _single(mean: torch.Tensor, var: torch.Tensor, factor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One component as the [1, ...] tensors of StartModel."""
    return mean.new_zeros(1), mean[None], var[None], factor[None]


def _gaussian(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Full covariance C = L L^T as the factor, no diagonal part."""
    cov = torch.cov(x.T) + 1e-10 * torch.eye(x.shape[1], dtype=x.dtype)
    return _single(x.mean(0), x.new_zeros(x.shape[1]), torch.linalg.cholesky(cov))


def _diagonal(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return _single(x.mean(0), x.var(0), x.new_zeros(x.shape[1], 0))


def _lowrank(x: torch.Tensor, rank: int) -> tuple[torch.Tensor, ...]:
    """Probabilistic PCA (Tipping & Bishop 1999): top-r directions plus an isotropic floor for the rest."""
    n, d = x.shape
    _, s, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    vals = s**2 / (n - 1)
    rest = vals[rank:].sum() / max(d - rank, 1)
    factor = vh[:rank].T * (vals[:rank] - rest).clamp_min(0).sqrt()
    return _single(x.mean(0), x.new_full((d,), rest.item()), factor)


def _seeds(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new centre drawn with probability ~ squared distance."""
    centres = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(k - 1):
        dist = torch.cdist(x, centres).min(1).values ** 2
        centres = torch.cat([centres, x[torch.multinomial(dist + 1e-300, 1, generator=generator)]])
    return centres.clone()


def _gmm(x: torch.Tensor, components: int, iters: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Diagonal-covariance GMM by EM (Dempster, Laird, Rubin 1977), started by k-means++ seeding."""
    n, d = x.shape
    floor = 1e-6 * x.var(0).mean() + 1e-12
    means = _seeds(x, components, generator)
    var = x.var(0).expand(components, d).clone()
    log_w = x.new_full((components,), -math.log(components))
    for _ in range(iters):
        log_lik = -0.5 * (torch.log(var).sum(1) + ((x[:, None] - means) ** 2 / var).sum(2)) + log_w  # [n, J]
        resp = torch.softmax(log_lik, 1)
        mass = resp.sum(0) + 1e-12
        means = resp.T @ x / mass[:, None]
        var = (resp.T @ x**2 / mass[:, None] - means**2).clamp_min(floor)
        log_w = torch.log(mass / n)
    return log_w, means, var, x.new_zeros(components, d, 0)


def fit_start(
    data: torch.Tensor, sigma_ve: float, family: str = "diagonal", *, rank: int = 8, components: int = 4,
    iters: int = 50, seed: int = 0, steps: int = 300,
) -> StartModel | FlowStart:  # fmt: skip
    """Fit ``family`` to clean samples data [n, *shape] and noise it at VE sigma ``sigma_ve`` (float64).

    rank: lowrank and normalizing_flow; components and iters: gmm; seed: gmm and normalizing_flow;
    steps: normalizing_flow's Adam steps (flow.py).
    """
    if not (math.isfinite(sigma_ve) and sigma_ve > 0):
        raise ValueError(f"sigma* must be a positive finite VE sigma, got {sigma_ve}")
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(f"no reference samples: got a tensor of shape {tuple(data.shape)}")
    x = data.detach().to("cpu", torch.float64).flatten(1)
    _check(x, family, rank, components)
    if family == "normalizing_flow":
        return fit_flow(x, tuple(data.shape[1:]), float(sigma_ve), rank=rank, steps=steps, seed=seed)
    if family == "gaussian":
        parts = _gaussian(x)
    elif family == "diagonal":
        parts = _diagonal(x)
    elif family == "lowrank":
        parts = _lowrank(x, rank)
    else:
        parts = _gmm(x, components, iters, torch.Generator().manual_seed(seed))
    log_w, means, var, factors = parts
    return StartModel(family, tuple(data.shape[1:]), float(sigma_ve), log_w, means, var + sigma_ve**2, factors)
