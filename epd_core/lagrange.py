"""Interval-collocation sampler: Lagrange interpolation of the denoiser plus fixed-point sweeps.

After Li, Zhou, Wei, Chen (2025), arXiv:2506.24042, as reconstructed in
docs/lagrange.md: the paper's text was not available, so this is the standard
exponential-integrator collocation its abstract describes, not a transcription.

In k-diffusion coordinates both model kinds obey d(x/sigma) = -D / sigma^2 dsigma, so with
lambda = -log sigma (VE) or log((1 - sigma) / sigma) (flow, half the log-SNR) every node
state of an interval [sigma_a, sigma_b] is
    x_k = sigma_k * (x_a / sigma_a + int_{lambda_a}^{lambda_k} e^lambda P(lambda) dlambda),
where P is the Lagrange polynomial through the denoiser values D_j at K + 1 nodes
(equispaced or Chebyshev-Lobatto in lambda, both ends included). The weights are plain
float64 scalars per interval (Gauss-Legendre quadrature, exact to round-off). The unknown
node states are found by R Picard sweeps from a DDIM guess; the K node calls of a sweep go
into one batched model call (K-major, epd_core.points).

Singular ends: the interval that ends at sigma = 0 (lambda = +inf) switches to the direction
form, as EPD's last step does: it interpolates d = (x - D) / sigma in sigma over K nodes that
exclude 0 and integrates x_b = x_a + int P_d dsigma (K = 1 is the Euler step to 0). There
the data-form Picard map would not contract (its weight 1 - sigma_k / sigma_a does not
shrink with the step), which measured order 2 whatever K and R. A flow interval that
starts at sigma = 1 (lambda = -inf) interpolates D in sigma.

warm_start: from the second interval on, the node values are first predicted from the
previous interval (its chord, damped toward its last value: see ``extrapolate``), and the
left node reuses the previous interval's last evaluation (UniPC-style), so an interval costs
K * R calls in R rounds.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from .points import evaluate_points
from .vocab import KINDS, PARALLEL_MODES, Kind, Parallel

Placement = Literal["chebyshev", "equispaced"]
PLACEMENTS: tuple[Placement, ...] = ("chebyshev", "equispaced")
QUAD_POINTS = 32  # Gauss-Legendre points per weight integral: exact to round-off for e^lambda * poly
MAX_ORDER = 8  # the node caps order at 5; higher orders are allowed here for studies
WARM_DAMPING = 0.7  # the warm chord's least damping, set on bench/bench_lagrange.py (docs/lagrange.md)


class Interval(NamedTuple):
    """One interval's float64 coefficients: x_k = scale_k x_a + sum_j weights[k, j] v_j.

    v_j is D_j, or d_j = (x_j - D_j) / sigma_j when ``direction`` (the step to 0).

        sigmas [M]: node sigmas, sigmas[0] = sigma_a (known state); rows k = 1..M-1 are unknowns.
        scale [M-1], weights [M-1, M]: the unknown node states. out_scale, out_weights [M]: x_b.
        variable: maps sigma to the interpolation variable; basis: L_j at variable values.
    """

    sigmas: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    out_scale: float
    out_weights: np.ndarray
    variable: Callable[[np.ndarray], np.ndarray]
    nodes: np.ndarray  # node values in ``variable``
    direction: bool = False


def unit_nodes(order: int, placement: Placement) -> np.ndarray:
    """K + 1 nodes on [0, 1], both ends included: j / K or (1 - cos(pi j / K)) / 2."""
    j = np.arange(order + 1, dtype=np.float64)
    return j / order if placement == "equispaced" else (1.0 - np.cos(np.pi * j / order)) / 2.0


def lagrange_basis(nodes: np.ndarray, t: np.ndarray) -> np.ndarray:
    """L_j(t) [len(t), len(nodes)]: the Lagrange basis through ``nodes`` at points ``t``."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    out = np.ones((t.shape[0], len(nodes)))
    for j, node_j in enumerate(nodes):
        for m, node_m in enumerate(nodes):
            if m != j:
                out[:, j] *= (t[:, 0] - node_m) / (node_j - node_m)
    return out


def lam_of(sigma: np.ndarray, kind: Kind) -> np.ndarray:
    """lambda(sigma): -log sigma (VE) or log((1 - sigma) / sigma) (flow)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    return -np.log(sigma) if kind == "ve" else np.log((1.0 - sigma) / sigma)


def sigma_of(lam: np.ndarray, kind: Kind) -> np.ndarray:
    """The inverse of ``lam_of``."""
    return np.exp(-lam) if kind == "ve" else 1.0 / (1.0 + np.exp(lam))


def _integrals(nodes: np.ndarray, start: float, ends: np.ndarray, density: Callable) -> np.ndarray:
    """[len(ends), len(nodes)]: int_start^end density(v) L_j(v) dv by Gauss-Legendre."""
    gx, gw = np.polynomial.legendre.leggauss(QUAD_POINTS)
    rows = []
    for end in ends:
        half = (end - start) / 2.0
        v = start + half * (gx + 1.0)
        rows.append(half * (gw * density(v)) @ lagrange_basis(nodes, v))
    return np.array(rows).reshape(len(ends), len(nodes))


def make_interval(sigma_a: float, sigma_b: float, order: int, placement: Placement, kind: Kind) -> Interval:
    """Coefficients of one interval sigma_a > sigma_b >= 0 (see the module docstring)."""
    unit = unit_nodes(order, placement)
    if sigma_b == 0.0:
        nodes = sigma_a * (1.0 - unit[:-1])  # d(., 0) is 0 / 0: the nodes stop short of 0
        integrals = _integrals(nodes, sigma_a, np.append(nodes[1:], 0.0), np.ones_like)
        ident = lambda s: np.asarray(s, dtype=np.float64)  # noqa: E731
        return Interval(nodes, np.ones(len(nodes) - 1), integrals[:-1], 1.0, integrals[-1], ident, nodes, True)
    if kind == "flow" and sigma_a >= 1.0:
        variable = lambda s: np.asarray(s, dtype=np.float64)  # noqa: E731
        density = lambda v: -1.0 / v**2  # noqa: E731  (d(x/sigma) = -D / sigma^2 dsigma)
        nodes = sigma_a + (sigma_b - sigma_a) * unit
        sigmas = nodes.copy()
    else:
        variable = lambda s: lam_of(s, kind)  # noqa: E731
        density = np.exp
        lam_a, lam_b = lam_of(np.array([sigma_a, sigma_b]), kind)
        nodes = lam_a + (lam_b - lam_a) * unit
        sigmas = sigma_of(nodes, kind)
        sigmas[0], sigmas[-1] = sigma_a, sigma_b  # exact ends despite the round trip through lambda
    weights = sigmas[1:, None] * _integrals(nodes, float(nodes[0]), nodes[1:], density)
    scale = sigmas[1:] / sigma_a
    return Interval(sigmas, scale, weights, float(scale[-1]), weights[-1], variable, nodes)


def make_intervals(sigmas: torch.Tensor, order: int, placement: Placement, kind: Kind) -> list[Interval]:
    """One ``Interval`` per consecutive sigma pair, in float64."""
    grid = sigmas.detach().double().cpu().tolist()
    return [make_interval(a, b, order, placement, kind) for a, b in itertools.pairwise(grid)]


def combine_nodes(x_a: torch.Tensor, scale: float, weights: np.ndarray, values: list[torch.Tensor]) -> torch.Tensor:
    """scale * x_a + sum_j weights[j] * values[j] (float64 coefficients cast where they meet x)."""
    return scale * x_a + sum(float(w) * v for w, v in zip(weights, values))


def node_states(iv: Interval, x_a: torch.Tensor, values: list[torch.Tensor]) -> list[torch.Tensor]:
    """The unknown node states x_1..x_{M-1} from node values D_0..D_{M-1}."""
    return [combine_nodes(x_a, float(s), w, values) for s, w in zip(iv.scale, iv.weights)]


def extrapolate(prev: Interval, prev_values: list[torch.Tensor], iv: Interval) -> list[torch.Tensor]:
    """Warm-start node values of ``iv``: the previous interval's chord, damped toward its last value.

    v_j = D_last + theta * (chord(v_j) - D_last), the chord through the previous interval's first
    and last values in its variable, theta = max(WARM_DAMPING, 1 / (1 + h)) with h the new interval's
    width in lambda. theta - 1 = O(h), so the prediction keeps the chord's O(h^2) error. The degree-K
    polynomial followed a whole interval ahead amplified the node errors (basis weights 3, -8, 6 at
    K = 2) and diverged below 16 intervals for K >= 2 (docs/lagrange.md, "Warm start").
    """
    ends = prev.nodes[[0, -1]]
    toward_first = lagrange_basis(ends, prev.variable(iv.sigmas))[:, 0]  # chord - D_last = b_0 (D_first - D_last)
    theta = max(WARM_DAMPING, 1.0 / (1.0 + float(iv.nodes[-1] - iv.nodes[0])))
    first, last = prev_values[0], prev_values[-1]
    return [last + (theta * float(b)) * (first - last) for b in toward_first]


def sweep(
    model: Callable[..., torch.Tensor],
    iv: Interval,
    x_a: torch.Tensor,
    values: list[torch.Tensor],
    extra_args: dict[str, Any],
    parallel: Parallel,
) -> list[torch.Tensor]:
    """One refinement: D at every unknown node state in one batched call; returns new node values."""
    if len(iv.sigmas) == 1:
        return values
    states = node_states(iv, x_a, values)
    sigma_eval = torch.as_tensor(iv.sigmas[1:], device=x_a.device).to(x_a.dtype)
    denoised = evaluate_points(model, states, sigma_eval, extra_args, parallel)
    if iv.direction:
        denoised = [(x - d) / float(s) for x, d, s in zip(states, denoised, iv.sigmas[1:])]
    return [values[0], *denoised]


def start_values(iv: Interval, x_a: torch.Tensor, d0: torch.Tensor) -> list[torch.Tensor]:
    """The DDIM guess: D_0 (or the Euler slope on the step to 0) at every node."""
    value = (x_a - d0) / float(iv.sigmas[0]) if iv.direction else d0
    return [value] * len(iv.sigmas)


def check_options(order: int, refinements: int, nodes: str, kind: str, warm_start: bool, parallel: str) -> None:
    """Reject bad options with the value and the valid range."""
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order={order!r} must be an integer between 1 and {MAX_ORDER}")
    if isinstance(refinements, bool) or not isinstance(refinements, int) or refinements < 0:
        raise ValueError(f"refinements={refinements!r} must be an integer >= 0")
    if warm_start and refinements < 1:
        raise ValueError("warm_start needs refinements >= 1 (the predicted node values must be evaluated once)")
    for name, value, allowed in (("nodes", nodes, PLACEMENTS), ("kind", kind, KINDS), ("parallel", parallel, PARALLEL_MODES)):  # fmt: skip
        if value not in allowed:
            raise ValueError(f"{name}={value!r} is not one of {allowed}")


def check_sigmas(sigmas: torch.Tensor, kind: Kind) -> None:
    """The grid must strictly decrease, stay >= 0, and (flow) start at most at 1."""
    grid = sigmas.detach().double().cpu()
    if bool((grid[1:] >= grid[:-1]).any()) or float(grid[-1]) < 0.0:
        values = [round(float(s), 4) for s in grid]
        raise ValueError(f"the sigmas must strictly decrease to >= 0, got {values}")
    if kind == "flow" and float(grid[0]) > 1.0:
        raise ValueError(f"a flow model's sigmas must not exceed 1, got {float(grid[0]):.4g}")


def nfe_per_run(num_intervals: int, order: int, refinements: int, warm_start: bool, ends_at_zero: bool) -> int:
    """Model evaluations (at batch size B) of one run: (1 + K R) per interval, K R warm, less on the step to 0."""
    total = 0
    for i in range(num_intervals):
        unknown = order - 1 if ends_at_zero and i == num_intervals - 1 else order
        total += unknown * refinements + (0 if warm_start and i > 0 else 1)
    return total


def run_lagrange(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    *,
    order: int = 2,
    refinements: int = 2,
    nodes: Placement = "chebyshev",
    warm_start: bool = False,
    kind: Kind = "ve",
    parallel: Parallel = "batched",
) -> torch.Tensor:
    """The interval loop (undecorated); see ``sample_lagrange``."""
    check_options(order, refinements, nodes, kind, warm_start, parallel)
    check_sigmas(sigmas, kind)
    extra_args = {} if extra_args is None else extra_args
    prev: tuple[Interval, list[torch.Tensor]] | None = None
    for i, iv in enumerate(make_intervals(sigmas, order, nodes, kind)):
        sigma_a = float(iv.sigmas[0])
        if warm_start and prev is not None and not iv.direction:
            values = extrapolate(*prev, iv)
            values[0] = prev[1][-1]  # the previous interval's last evaluation, reused
        else:
            reuse = warm_start and prev is not None  # the step to 0: Euler guess from the reused value
            d0 = prev[1][-1] if reuse else model(x, sigma_a * x.new_ones([x.shape[0]]), **extra_args)
            values = start_values(iv, x, d0)
        for _ in range(refinements):
            values = sweep(model, iv, x, values, extra_args, parallel)
        x_a, x = x, combine_nodes(x, iv.out_scale, iv.out_weights, values)
        prev = (iv, values)
        if callback is not None:
            denoised = x_a - sigma_a * values[0] if iv.direction else values[-1]
            callback({"x": x, "i": i, "sigma": sigma_a, "sigma_hat": sigma_a, "denoised": denoised})
    return x


@torch.no_grad()
def sample_lagrange(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    disable: bool | None = None,
    *,
    order: int = 2,
    refinements: int = 2,
    nodes: Placement = "chebyshev",
    warm_start: bool = False,
    kind: Kind = "ve",
    parallel: Parallel = "batched",
) -> torch.Tensor:
    """High-order Lagrange interval collocation with Picard refinement (Li et al. 2025, reconstructed).

    order: K, the polynomial degree (K + 1 nodes per interval); refinements: R sweeps, each
    one batched call of K node evaluations; nodes: their placement in lambda; warm_start:
    extrapolate from the previous interval (needs R >= 1); kind: "ve" or "flow"; parallel:
    "batched" (one K*B call per sweep) or "sequential" (K calls). Cold cost per interval:
    1 + K R evaluations in 1 + R rounds. ``disable`` is accepted for signature compatibility.
    """
    return run_lagrange(
        model, x, sigmas, extra_args, callback,
        order=order, refinements=refinements, nodes=nodes, warm_start=warm_start, kind=kind, parallel=parallel,
    )  # fmt: skip


__all__ = ["PLACEMENTS", "Placement", "make_interval", "nfe_per_run", "run_lagrange", "sample_lagrange"]
