"""The learnable part of an EPD table: its raw logits (epd-method.md §1.1).

The sigma grid, K, the scale ranges and AFS stay fixed; optimisation runs on the
unconstrained logits and the constrained values come from EPDParams' pure functions.
"""

from __future__ import annotations

from typing import Any

import torch

from ..params import EPDParams


class TrainableTable(torch.nn.Module):
    """Logits r, lambda (always learned) and c, a (learned when their scale range is > 0)."""

    def __init__(self, start: EPDParams, learn_scales: bool = True) -> None:
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

    def table(self) -> EPDParams:
        """The current table, differentiable in the logits."""
        return self.start.replace(
            r_logits=self.r_logits,
            weight_logits=self.weight_logits,
            scale_dir_logits=self.scale_dir_logits,
            scale_time_logits=self.scale_time_logits,
        )

    def export(self, metadata: dict[str, Any] | None = None) -> EPDParams:
        """A detached copy of the current table with merged metadata."""
        merged = {**dict(self.start.metadata), **(metadata or {})}
        return self.start.replace(
            r_logits=self.r_logits.detach().clone(),
            weight_logits=self.weight_logits.detach().clone(),
            scale_dir_logits=self.scale_dir_logits.detach().clone(),
            scale_time_logits=self.scale_time_logits.detach().clone(),
            metadata=merged,
        )
