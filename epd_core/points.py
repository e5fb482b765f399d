"""Evaluate the K intermediate points of an EPD step (docs/engine.md).

Batched mode stacks the points K-major, ``[x_0; x_1; ...; x_{K-1}]`` with rows
``k*B + b``: ComfyUI repeats per-sample conditioning cyclically,
so K-major keeps every row aligned with its own
condition, whereas upstream's B-major ``repeat_interleave`` does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch


def stack_points(x_hats: list[torch.Tensor], sigma_eval: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K-major stack: x [K*B, ...] and its per-row sigma vector [K*B].

    sigma_eval is [K] (one table for the batch) or [K, B] (a table per sample).
    """
    batch = x_hats[0].shape[0]
    sigma_rows = sigma_eval.reshape(-1) if sigma_eval.ndim == 2 else sigma_eval.repeat_interleave(batch)
    return torch.cat(x_hats), sigma_rows


def evaluate_points(
    model: Callable[..., torch.Tensor],
    x_hats: list[torch.Tensor],
    sigma_eval: torch.Tensor,
    extra_args: dict[str, Any],
    parallel: Literal["batched", "sequential"] = "batched",
    chunk_size: int = 0,
) -> list[torch.Tensor]:
    """Denoised predictions at the K points.

    x_hats: K tensors [B, ...]; sigma_eval: [K] or [K, B] model-time sigmas (a * tau).
    batched: ceil(K / chunk_size) calls (one when chunk_size is 0); sequential: K calls.
    """
    num_points = len(x_hats)
    per_call = 1 if parallel == "sequential" else (chunk_size if chunk_size > 0 else num_points)
    out: list[torch.Tensor] = []
    for start in range(0, num_points, per_call):
        chunk = slice(start, start + per_call)
        x_big, s_big = stack_points(x_hats[chunk], sigma_eval[chunk])
        out.extend(checked_denoised(model(x_big, s_big, **extra_args), x_big).chunk(len(x_hats[chunk])))
    return out


def checked_denoised(denoised: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The model's output must be a tensor of x's shape (one prediction per input row); shapes only, no sync."""
    if not torch.is_tensor(denoised) or denoised.shape != x.shape:
        got = tuple(denoised.shape) if torch.is_tensor(denoised) else type(denoised).__name__
        raise ValueError(
            f"the model returned {got} for an input of shape {tuple(x.shape)}; a denoiser must return one "
            "prediction per input row, of the input's shape. Check the model wrapper (batch size, conditioning)."
        )
    return denoised
