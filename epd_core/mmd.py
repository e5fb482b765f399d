"""Maximum mean discrepancy between sets of image patches (SwD's patch distribution matching, issue 16 C).

A distribution distance, not a pointwise one: it compares the set of p x p patches of one
batch with that of another, wherever in which image they sit. Used by the distillation loss
option ``loss="mmd"`` (distill/loop.py) and by bench/bench_scalewise.py.
"""

from __future__ import annotations

import torch

KERNELS = ("rbf", "linear")


def patches(x: torch.Tensor, size: int) -> torch.Tensor:
    """x [B, C, H, W] -> [B * n, C * size * size]: the non-overlapping size x size patches, as rows."""
    if x.ndim != 4 or size < 1 or size > min(x.shape[-2:]):
        raise ValueError(f"patch size {size} needs a [B, C, H, W] tensor at least that large, got {tuple(x.shape)}")
    rows = torch.nn.functional.unfold(x, kernel_size=size, stride=size)  # [B, C*s*s, n]
    return rows.transpose(1, 2).reshape(-1, rows.shape[1])


def median_bandwidth(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The median heuristic: squared bandwidth = median pairwise squared distance of the pooled rows, detached."""
    pooled = torch.cat([a, b]).detach()
    d2 = torch.cdist(pooled, pooled).pow(2)
    return d2[d2 > 0].median().clamp_min(1e-12) if bool((d2 > 0).any()) else d2.new_tensor(1.0)


def mmd2(a: torch.Tensor, b: torch.Tensor, kernel: str = "rbf", bandwidth: torch.Tensor | None = None) -> torch.Tensor:
    """Squared MMD between row sets a [N, D] and b [M, D].

    rbf: k(u, v) = exp(-|u - v|^2 / h), the unbiased estimator (diagonal terms left out), h the
    median heuristic unless given; linear: |mean a - mean b|^2 (SwD's default kernel).
    """
    if kernel == "linear":
        return (a.mean(0) - b.mean(0)).pow(2).sum()
    if kernel != "rbf":
        raise ValueError(f"kernel={kernel!r} is not one of {KERNELS}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 rows per set, got {len(a)} and {len(b)}")
    h = median_bandwidth(a, b) if bandwidth is None else bandwidth
    n, m = len(a), len(b)
    kaa = torch.exp(-torch.cdist(a, a).pow(2) / h)
    kbb = torch.exp(-torch.cdist(b, b).pow(2) / h)
    kab = torch.exp(-torch.cdist(a, b).pow(2) / h)
    within = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1)) + (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return within - 2 * kab.mean()


def patch_mmd2(x: torch.Tensor, y: torch.Tensor, size: int = 4, kernel: str = "rbf") -> torch.Tensor:
    """Squared MMD between the size x size patches of batch x and of batch y (both [B, C, H, W])."""
    return mmd2(patches(x, size), patches(y, size), kernel)
