"""The learnable part of an EPD table: its raw logits, optionally its grid.

K, the scale ranges and AFS stay fixed; optimisation runs on the unconstrained
logits and the constrained values come from EPDParams' pure functions. The grid's
end points stay fixed; with ``learn_sigmas`` its interior points are learned too
(learned discretisation, which the paper does not do): each one is a sigmoid
fraction of the way from the floor (the last sigma) to the point before it, so the
grid stays strictly descending whatever the optimiser does.
"""

from __future__ import annotations

from typing import Any

import torch

from ..params import EPDParams


def grid_logits(sigmas: torch.Tensor) -> torch.Tensor:
    """[N - 1] logits of a float64 grid [N + 1]'s interior points (inverse of grid_from_logits)."""
    floor = sigmas[-1]
    return torch.logit((sigmas[1:-1] - floor) / (sigmas[:-2] - floor))


def grid_from_logits(sigmas: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The grid with sigmas[0] and sigmas[-1] kept and interior point n at floor + (s_{n-1} - floor) sigmoid(z_n)."""
    floor, points = sigmas[-1], [sigmas[0]]
    for z in logits:
        points.append(floor + (points[-1] - floor) * torch.sigmoid(z))
    return torch.stack([*points, floor])


class TrainableTable(torch.nn.Module):
    """Logits r, lambda (always learned), c, a (when their scale range is > 0) and optionally the grid."""

    def __init__(self, start: EPDParams, learn_scales: bool = True, learn_sigmas: bool = False) -> None:
        super().__init__()
        # Fresh copies: a table made under torch.inference_mode (inside a ComfyUI prompt) cannot be
        # saved for backward, and this module must never alias the caller's tensors.
        self.start = start.replace(sigmas=start.sigmas.detach().clone())
        self.r_logits = torch.nn.Parameter(start.r_logits.detach().clone())
        self.weight_logits = torch.nn.Parameter(start.weight_logits.detach().clone())
        for name, scale in (("scale_dir_logits", start.scale_dir), ("scale_time_logits", start.scale_time)):
            value = getattr(start, name).detach().clone()
            if learn_scales and scale > 0:
                setattr(self, name, torch.nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        logits = grid_logits(self.start.sigmas)
        self.sigma_logits = torch.nn.Parameter(logits) if learn_sigmas else None

    def grid(self) -> torch.Tensor:
        """The current grid: the start's as is, or the learned one (differentiable in sigma_logits)."""
        if self.sigma_logits is None:
            return self.start.sigmas
        return grid_from_logits(self.start.sigmas, self.sigma_logits)

    def table(self) -> EPDParams:
        """The current table, differentiable in the logits."""
        return self.start.replace(
            sigmas=self.grid(),
            r_logits=self.r_logits,
            weight_logits=self.weight_logits,
            scale_dir_logits=self.scale_dir_logits,
            scale_time_logits=self.scale_time_logits,
        )

    def export(self, metadata: dict[str, Any] | None = None) -> EPDParams:
        """A detached copy of the current table with merged metadata."""
        merged = {**dict(self.start.metadata), **(metadata or {})}
        return self.start.replace(
            sigmas=self.grid().detach().clone(),
            r_logits=self.r_logits.detach().clone(),
            weight_logits=self.weight_logits.detach().clone(),
            scale_dir_logits=self.scale_dir_logits.detach().clone(),
            scale_time_logits=self.scale_time_logits.detach().clone(),
            metadata=merged,
        )
