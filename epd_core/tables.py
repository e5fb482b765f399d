"""Training-free EPD tables.

uniform: the RL cold start, r = 0.5 -/+ 0.165 for K = 2 (spread evenly for other K),
equal weights. gauss_legendre: the K-point Gauss-Legendre rule for the step's exact
integral, in the variable each step form integrates over: sigma for the direction
form (x' = x + int d dsigma), 1/sigma for the data form (x' is exact when D is
averaged uniformly in 1/sigma). Both are plain tables that any learned table replaces.
Measured on the digits benchmark: in the data form the two are within 3% (uniform
slightly ahead at 9 rounds); in the direction form Gauss-Legendre has 2-3x less
error. "auto" picks uniform for the data form and Gauss-Legendre for the direction form.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .params import EPDParams
from .vocab import DEFAULT_TABLE_FORM, TABLE_KIND_CHOICES, Form, TableKindChoice

# Older names, kept importable: the definitions live in vocab ("auto" picks by form).
TableKind = TableKindChoice
TABLE_KINDS = TABLE_KIND_CHOICES
COLD_START_SPREAD = 0.33  # upstream fake_train: r = 0.5 -/+ 0.165 for K = 2


def uniform_positions(num_points: int) -> np.ndarray:
    """Cold-start positions [K]: evenly spread around 0.5, 0.335/0.665 for K = 2."""
    k = np.arange(num_points)
    return 0.5 + COLD_START_SPREAD * ((2 * k + 1) / num_points - 1)


def gauss_legendre_row(sigma: float, sigma_next: float, num_points: int, form: Form) -> tuple[np.ndarray, np.ndarray]:
    """Positions r and weights lam [K] of the Gauss-Legendre rule for one step."""
    nodes, weights = np.polynomial.legendre.leggauss(num_points)
    xi, lam = (nodes + 1) / 2, weights / 2
    if sigma_next == 0.0:
        return xi, lam  # the linear rule tau = (1 - r) sigma places nodes uniformly in sigma
    if form == "data":
        tau = 1.0 / (1 / sigma + xi * (1 / sigma_next - 1 / sigma))
    else:
        tau = sigma + xi * (sigma_next - sigma)
    return np.log(tau / sigma) / math.log(sigma_next / sigma), lam


def default_table(
    sigmas: torch.Tensor,
    num_points: int = 2,
    kind: TableKindChoice = "auto",
    *,
    form: Form = DEFAULT_TABLE_FORM,
    afs: bool = False,
) -> EPDParams:
    """A training-free table for ``sigmas`` [N] with K = num_points."""
    if kind not in TABLE_KIND_CHOICES:
        raise ValueError(f"default table kind={kind!r} is not one of {TABLE_KIND_CHOICES}")
    if num_points < 1:
        raise ValueError(f"num_points={num_points} must be at least 1")
    if kind == "auto":
        kind = "uniform" if form == "data" else "gauss_legendre"
    grid = sigmas.detach().double().cpu()
    steps = len(grid) - 1
    if kind == "uniform":
        r = np.tile(uniform_positions(num_points), (steps, 1))
        lam = np.full((steps, num_points), 1.0 / num_points)
    else:
        rows = [gauss_legendre_row(float(grid[n]), float(grid[n + 1]), num_points, form) for n in range(steps)]
        r, lam = np.stack([p for p, _ in rows]), np.stack([w for _, w in rows])
    meta = {"provenance": "default", "table_kind": kind, "form": form}
    return EPDParams.from_values(torch.from_numpy(r), torch.from_numpy(lam), grid, afs=afs, metadata=meta)
