"""An exact denoiser: a Gaussian mixture whose E[x0 | x_sigma] is closed-form.

For data x0 ~ sum_j pi_j N(mu_j, U_j diag(s_j) U_j^T) and x = x0 + sigma * eps,
the posterior over components is softmax_j(log pi_j + log N(x; mu_j, Sigma_j + sigma^2 I))
and E[x0 | x, j] = mu_j + U_j diag(s_j / (s_j + sigma^2)) U_j^T (x - mu_j).
This gives benchmarks and tests a real probability-flow ODE with no training error,
so the only error left is the solver's. Flow models see the same data through
x_t = (1 - t) x0 + t eps, i.e. a VE sigma of t / (1 - t) on x_t / (1 - t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianMixture:
    """Components: log_weights [J], means [J, D], eigvecs [J, D, D], eigvals [J, D], labels [J]."""

    log_weights: torch.Tensor
    means: torch.Tensor
    eigvecs: torch.Tensor
    eigvals: torch.Tensor
    labels: torch.Tensor

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _component_mask(self, classes: torch.Tensor | None, batch: int) -> torch.Tensor:
        """[B, J] additive mask: -inf on components outside each sample's class."""
        if classes is None:
            return self.log_weights.new_zeros(batch, len(self.log_weights))
        keep = self.labels[None, :] == classes.to(self.labels.device)[:, None]
        return torch.where(keep, 0.0, -math.inf).to(self.log_weights)

    def denoise(
        self, x: torch.Tensor, sigma: torch.Tensor | float, classes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """E[x0 | x] for VE noise; x [B, ...] with prod(...) = D, sigma scalar or [B], classes [B] or None."""
        shape, dtype = x.shape, x.dtype
        flat = x.reshape(shape[0], -1).to(self.means)
        var = torch.as_tensor(sigma, dtype=self.means.dtype, device=flat.device).reshape(-1, 1, 1) ** 2
        proj = torch.einsum("jdk,bjd->bjk", self.eigvecs, flat[:, None, :] - self.means[None])  # U^T (x - mu)
        total = self.eigvals[None] + var  # [B, J, D]
        log_lik = -0.5 * (torch.log(total).sum(-1) + (proj**2 / total).sum(-1))
        post = torch.softmax(log_lik + self.log_weights + self._component_mask(classes, shape[0]), dim=1)
        shrunk = torch.einsum("jdk,bjk->bjd", self.eigvecs, proj * self.eigvals[None] / total)
        x0 = torch.einsum("bj,bjd->bd", post, self.means[None] + shrunk)
        return x0.reshape(shape).to(dtype)

    def denoise_flow(
        self, x: torch.Tensor, t: torch.Tensor | float, classes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """E[x0 | x_t] for rectified-flow noise x_t = (1 - t) x0 + t eps, 0 <= t <= 1."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.dim() - 1)))
        t = t.clamp(max=1 - 1e-9)  # t = 1 is pure noise: the limit is the mixture mean, reached through a huge VE sigma
        return self.denoise(x / (1 - t), (t / (1 - t)).flatten(), classes)

    def sample(self, n: int, generator: torch.Generator, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Exact draws x0 [n, D] from the mixture (restricted to ``classes`` [n] when given)."""
        logits = self.log_weights.expand(n, -1) + self._component_mask(classes, n)
        comp = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        scaled = torch.einsum("bdk,bk->bd", self.eigvecs[comp], z * self.eigvals[comp].sqrt())
        return self.means[comp] + scaled


def kmeans(data: torch.Tensor, k: int, generator: torch.Generator, iters: int = 30) -> torch.Tensor:
    """Lloyd's k-means on data [n, D]; returns the cluster index of every row."""
    centres = data[torch.randperm(len(data), generator=generator)[:k]].clone()
    for _ in range(iters):
        assign = torch.cdist(data, centres).argmin(1)
        for j in range(k):
            members = data[assign == j]
            if len(members):
                centres[j] = members.mean(0)
    return torch.cdist(data, centres).argmin(1)


def fit_mixture(
    data: torch.Tensor, labels: torch.Tensor, per_class: int = 4, shrink: float = 1e-2, seed: int = 0
) -> GaussianMixture:
    """Fit ``per_class`` full-covariance components to each class of data [n, D] (float64).

    ``shrink`` is added to every covariance's diagonal so that no component is singular.
    """
    gen = torch.Generator().manual_seed(seed)
    data = data.double()
    parts = []
    for cls in labels.unique(sorted=True).tolist():
        members = data[labels == cls]
        assign = kmeans(members, min(per_class, len(members)), gen)
        for j in assign.unique().tolist():
            pts = members[assign == j]
            cov = torch.cov(pts.T) if len(pts) > 1 else torch.zeros(data.shape[1], data.shape[1], dtype=data.dtype)
            vals, vecs = torch.linalg.eigh(cov + shrink * torch.eye(data.shape[1], dtype=data.dtype))
            parts.append((math.log(len(pts) / len(data)), pts.mean(0), vecs, vals.clamp_min(shrink), cls))
    return GaussianMixture(
        log_weights=torch.tensor([p[0] for p in parts], dtype=data.dtype),
        means=torch.stack([p[1] for p in parts]),
        eigvecs=torch.stack([p[2] for p in parts]),
        eigvals=torch.stack([p[3] for p in parts]),
        labels=torch.tensor([p[4] for p in parts]),
    )


def gaussian(mean: float = 0.5, std: float = 0.5, dim: int = 4) -> GaussianMixture:
    """A single isotropic Gaussian N(mean, std^2 I): the smallest exact test case."""
    eye = torch.eye(dim, dtype=torch.float64)
    return GaussianMixture(
        log_weights=torch.zeros(1, dtype=torch.float64),
        means=torch.full((1, dim), mean, dtype=torch.float64),
        eigvecs=eye[None],
        eigvals=torch.full((1, dim), std**2, dtype=torch.float64),
        labels=torch.zeros(1, dtype=torch.long),
    )


def two_blobs(labels: tuple[int, int] = (0, 0)) -> GaussianMixture:
    """Two narrow Gaussians (std 0.1) in 4-d: curved ODE paths, so a 2-3 step solver has a visible error.

    labels (0, 0) makes one class; (0, 1) gives each blob its own class for conditional tests.
    """
    eye = torch.eye(4, dtype=torch.float64)
    return GaussianMixture(
        log_weights=torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64)),
        means=torch.tensor([[1.0, 1.0, 0.0, 0.0], [-1.0, 0.5, 0.5, -1.0]], dtype=torch.float64),
        eigvecs=torch.stack([eye, eye]),
        eigvals=torch.full((2, 4), 0.01, dtype=torch.float64),
        labels=torch.tensor(labels),
    )


def _gamma_quantile(shape: float, p: torch.Tensor) -> torch.Tensor:
    """Quantiles of Gamma(shape, rate shape) at probabilities p (float64), by bisection on the regularized CDF."""
    a = torch.tensor(shape, dtype=torch.float64)
    lo, hi = torch.zeros_like(p), torch.full_like(p, 1e3)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = torch.special.gammainc(a, shape * mid) < p
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def student_t_mixture(
    dim: int = 16, centres: int = 4, df: float = 3.0, scale: float = 0.3, spread: float = 4.0, levels: int = 32,
    seed: int = 0,
) -> GaussianMixture:  # fmt: skip
    """A heavy-tailed mixture with an exact denoiser: ``centres`` multivariate Student-t's as Gaussian scale mixtures.

    A Student-t with ``df`` degrees of freedom is N(mu, scale^2 / tau I) with precision tau ~ Gamma(df / 2,
    rate df / 2). tau is replaced by ``levels`` equal-probability quantile midpoints, so each centre is
    ``levels`` Gaussians of equal weight with the same mean: a finite GaussianMixture, whose denoiser is
    exact for this distribution. Its tails are polynomial up to the widest level (scale / sqrt(tau_min),
    ~4.4 scale for df 3 and 32 levels). Centres are random N(0, (spread^2 / dim) I), so |mu| ~ spread.
    """
    gen = torch.Generator().manual_seed(seed)
    mus = torch.randn(centres, dim, generator=gen, dtype=torch.float64) * spread / math.sqrt(dim)
    p = (torch.arange(levels, dtype=torch.float64) + 0.5) / levels
    var = scale**2 / _gamma_quantile(df / 2, p)  # [levels]
    eye = torch.eye(dim, dtype=torch.float64)
    return GaussianMixture(
        log_weights=torch.full((centres * levels,), -math.log(centres * levels), dtype=torch.float64),
        means=mus.repeat_interleave(levels, 0),
        eigvecs=eye.expand(centres * levels, dim, dim).clone(),
        eigvals=var.repeat(centres)[:, None].expand(-1, dim).clone(),
        labels=torch.arange(centres).repeat_interleave(levels),
    )
