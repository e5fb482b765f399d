"""Per-state distillation losses: pointwise L2 (the default) or patch MMD (issue 16 C).

l2: mean squared error between the student's and the teacher's states, sample by sample.
mmd: the squared maximum mean discrepancy between the sets of p x p patches of the
student's batch and of the teacher's (SwD's patch distribution matching, epd_core.mmd):
a distribution-matching loss that does not ask each student sample to land on its own
teacher sample. Image states [B, C, H, W] use p x p patches; flat states [B, D] use the
rows themselves.
"""

from __future__ import annotations

import torch

from ..mmd import mmd2, patches

LOSSES = ("l2", "mmd")


def state_rows(x: torch.Tensor, patch: int) -> torch.Tensor:
    """The rows MMD compares: p x p patches of an image batch (p capped at its size), else the samples."""
    if x.ndim == 4:
        return patches(x, min(patch, *x.shape[-2:]))
    return x.reshape(len(x), -1)


def state_loss(x: torch.Tensor, target: torch.Tensor, loss: str = "l2", patch: int = 4) -> torch.Tensor:
    """The loss between a student state and its teacher target (same shape)."""
    if loss == "l2":
        return torch.mean((x - target) ** 2)
    if loss == "mmd":
        return mmd2(state_rows(x, patch), state_rows(target.detach(), patch))
    raise ValueError(f"loss={loss!r} is not one of {LOSSES}")
