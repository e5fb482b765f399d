"""EPD-Solver and EPD-Plugin sampling loops (docs/engine.md).

The model is seen only through the k-diffusion denoiser contract
``model(x, sigma_vec, **extra_args) -> denoised``. Both samplers keep ComfyUI's
sampler-function signature so they drop into ``comfy.samplers.KSAMPLER``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeAlias

import torch

from .params import EPDParams
from .plan import plan_run, prepare_sigmas
from .points import checked_denoised, evaluate_points
from .vocab import (
    DEFAULT_FORM,
    DEFAULT_KIND,
    DEFAULT_PARALLEL,
    DEFAULT_TAIL,
    FORMS,
    KINDS,
    PARALLEL_MODES,
    TAILS,
    Form,
    Kind,
    Parallel,
    Tail,
)

# Kept importable from here for older callers; the definitions live in vocab and plan.
__all__ = ["DEFAULT_FORM", "FORMS", "KINDS", "TAILS", "Form", "Kind", "Parallel", "Tail", "prepare_sigmas"]

Sigma: TypeAlias = float | torch.Tensor
"""A noise level: a Python float, or a 0-d tensor when the grid requires grad (see ``advance``)."""
Callback: TypeAlias = Callable[[dict[str, Any]], None]


class Denoiser(Protocol):
    """The k-diffusion denoiser contract: ``model(x [B, ...], sigma [B], **extra_args) -> D(x) [B, ...]``."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args: Any) -> torch.Tensor: ...


class StepRow(NamedTuple):
    """One step's table values (docs/engine.md): [K] for a shared table, [K, B] for one per sample.

    tau: intermediate sigmas; a: time scales; lam_c: weights times direction scales.
    """

    tau: torch.Tensor
    a: torch.Tensor
    lam_c: torch.Tensor


# iPNDM / Adams-Bashforth coefficients for orders 1-4 (docs/engine.md), newest first.
AB_COEFFS = ((1.0,), (1.5, -0.5), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def afs_denoised(x: torch.Tensor, sigma: Sigma, kind: Kind) -> torch.Tensor:
    """Analytical first step (docs/engine.md): D(x, sigma_max) ~ E[x0] ~ 0.

    VE: d = x / sqrt(1 + sigma^2) as upstream, so D = x - sigma d. Flow: D = 0 (d = x / sigma).
    """
    if kind == "flow":
        return torch.zeros_like(x)
    return x * (1.0 - sigma / (1.0 + sigma**2) ** 0.5)


def per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar as is; a per-sample vector [B] shaped [B, 1, ...] to broadcast over x [B, ...]."""
    return value if value.ndim == 0 else value.reshape(-1, *([1] * (x.ndim - 1)))


def combine(
    x: torch.Tensor,
    sigma: Sigma,
    sigma_next: Sigma,
    x_hats: list[torch.Tensor],
    denoised: list[torch.Tensor],
    tau: torch.Tensor,
    lam_c: torch.Tensor,
    form: Form,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final EPD combination of the K point evaluations; returns (x_next, D_bar).

    direction (the paper): x' = x + h * sum_k lam_k c_k (x_hat_k - D_k) / tau_k.
    data: D_bar = sum_k lam_k c_k D_k, then one exponential-integrator (DDIM) step
    x' = D_bar + (sigma'/sigma)(x - D_bar), which is the exact solution when D is
    constant over the step and stays stable under strong guidance.
    """
    d_bar = sum(per_sample(w, x) * dk for w, dk in zip(lam_c, denoised))
    if form == "data":
        return d_bar + (sigma_next / sigma) * (x - d_bar), d_bar
    g = sum(per_sample(w, x) * (xk - dk) / per_sample(t, x) for w, xk, dk, t in zip(lam_c, x_hats, denoised, tau))
    return x + (sigma_next - sigma) * g, d_bar


def epd_step(
    model: Denoiser,
    x: torch.Tensor,
    sigma: Sigma,
    sigma_next: Sigma,
    d_jump: torch.Tensor,
    row: StepRow,
    extra_args: dict[str, Any],
    *,
    form: Form = DEFAULT_FORM,
    parallel: Parallel = DEFAULT_PARALLEL,
    chunk_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One EPD step sigma -> sigma_next (docs/engine.md), differentiable in ``row``.

    row: ``StepRow`` tensors of shape [K], or [K, B] to give every sample its own table
    (RL rollouts). d_jump: the direction that carries x to the intermediate points
    (Euler's d_n for EPD, an Adams-Bashforth mix for the plugin).
    """
    tau = row.tau.to(x.device)
    x_hats = [x + per_sample(t.to(x.dtype) - sigma, x) * d_jump for t in tau]
    sigma_eval = (row.a.to(x.device) * tau).to(x.dtype)
    denoised = evaluate_points(model, x_hats, sigma_eval, extra_args, parallel, chunk_size)
    lam_c = row.lam_c.to(x.device, x.dtype)
    return combine(x, sigma, sigma_next, x_hats, denoised, tau.to(x.dtype), lam_c, form)


def table_rows(params: EPDParams) -> list[StepRow]:
    """Per-step rows (tau, a, lam_c) [K] of a table, computed once in float64."""
    tau, a, lam_c = params.tau(), params.a, params.lam * params.c
    return [StepRow(tau[n], a[n], lam_c[n]) for n in range(params.num_steps)]


def _check_options(kind: str, form: str, parallel: str) -> None:
    for name, value, allowed in (
        ("kind", kind, KINDS),
        ("form", form, FORMS),
        ("parallel", parallel, PARALLEL_MODES),
    ):
        if value not in allowed:
            raise ValueError(f"{name}={value!r} is not one of {allowed}")


def _report(callback: Callback | None, i: int, x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


def adams_bashforth(d: torch.Tensor, history: list[torch.Tensor], max_order: int) -> torch.Tensor:
    """iPNDM extrapolated direction from d_n and past anchor directions (newest last).

    max_order=1 gives d_n itself, the Euler jump of the plain EPD-Solver.
    """
    order = min(max_order, len(history) + 1)
    recent = [d] + history[::-1][: order - 1]
    return sum(cf * dk for cf, dk in zip(AB_COEFFS[order - 1], recent))


class StepConfig(NamedTuple):
    """How each step runs; shared by sampling and distillation so they cannot drift apart."""

    kind: Kind = DEFAULT_KIND
    form: Form = DEFAULT_FORM
    afs: bool = False
    max_order: int = 1  # 1: EPD-Solver's Euler jump; 2-4: EPD-Plugin's Adams-Bashforth order
    parallel: Parallel = DEFAULT_PARALLEL
    chunk_size: int = 0  # points per model call in batched mode; 0 = all K at once


def advance(
    model: Denoiser,
    x: torch.Tensor,
    n: int,
    sigmas: torch.Tensor,
    row: StepRow,
    history: list[torch.Tensor],
    extra_args: dict[str, Any],
    config: StepConfig,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Step n of the EPD loop: anchor, jump direction, K points; returns (x_next, D_bar, history).

    The step's sigmas are one type, ``Sigma``: Python floats, as ComfyUI passes them (so the
    arithmetic with x is the same as k-diffusion's), except when ``sigmas`` requires grad
    (distillation with learned sigmas). Then they stay 0-d tensors, because ``float()``
    would cut the graph and the gradient could not reach the grid through x_hat, tau and
    the final combination.
    """
    sigma: Sigma
    sigma_next: Sigma
    if sigmas.requires_grad:
        sigma, sigma_next = sigmas[n], sigmas[n + 1]
    else:
        sigma, sigma_next = float(sigmas[n]), float(sigmas[n + 1])
    if n == 0 and config.afs:
        denoised = afs_denoised(x, sigma, config.kind)
    else:
        denoised = checked_denoised(model(x, sigma * x.new_ones([x.shape[0]]), **extra_args), x)
    d = (x - denoised) / sigma
    d_jump = adams_bashforth(d, history, config.max_order)
    history = (history + [d.detach()])[-(config.max_order - 1) :] if config.max_order > 1 else []
    x_next, d_bar = epd_step(
        model, x, sigma, sigma_next, d_jump, row, extra_args,
        form=config.form, parallel=config.parallel, chunk_size=config.chunk_size,
    )  # fmt: skip
    return x_next, d_bar, history


def run_epd(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    *,
    params: EPDParams | None = None,
    num_points: int = 2,
    kind: Kind = DEFAULT_KIND,
    form: Form = DEFAULT_FORM,
    parallel: Parallel = DEFAULT_PARALLEL,
    chunk_size: int = 0,
    afs: bool | None = None,
    tail: Tail = DEFAULT_TAIL,
    max_order: int = 1,
) -> torch.Tensor:
    """The shared EPD loop on ``plan_run``'s grid and table; max_order > 1 is the iPNDM plugin.

    Not decorated, so distillation can differentiate through it. x: [B, ...]; sigmas: [N].
    """
    _check_options(kind, form, parallel)
    if not 1 <= max_order <= 4:
        raise ValueError(f"max_order={max_order} must be between 1 and 4")
    plan = plan_run(sigmas, params, num_points=num_points, form=form, tail=tail, afs=afs)
    config = StepConfig(kind, form, plan.afs, max_order, parallel, chunk_size)
    return run_rows(model, x, plan.sigmas, table_rows(plan.params), config, extra_args, callback)


def run_rows(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    rows: list[StepRow],
    config: StepConfig,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """The EPD loop over precomputed rows (``table_rows``, or per-sample rows [K, B] from epd_core.rl)."""
    if len(rows) != len(sigmas) - 1:
        raise ValueError(f"{len(rows)} table rows for {len(sigmas) - 1} steps; give one row per step")
    extra_args = {} if extra_args is None else extra_args
    if not bool(torch.isfinite(x).all()):
        raise ValueError("the input latent x contains nan or inf; check the latent and the noise fed to the sampler.")
    history: list[torch.Tensor] = []
    finite: list[torch.Tensor] = []
    for i, row in enumerate(rows):
        x, d_bar, history = advance(model, x, i, sigmas, row, history, extra_args, config)
        finite.append(torch.isfinite(d_bar).all() & torch.isfinite(x).all())  # no host sync inside the loop
        _report(callback, i, x, float(sigmas[i]), d_bar)
    _check_finite_steps(finite, sigmas)
    return x


def _check_finite_steps(finite: list[torch.Tensor], sigmas: torch.Tensor) -> None:
    """One sync after the loop: name the first step whose model output (or result) was nan/inf."""
    if not finite or bool(torch.stack(finite).all()):
        return
    i = int((~torch.stack(finite)).int().argmax())
    raise ValueError(
        f"the model returned nan or inf at step {i} (sigma={float(sigmas[i]):.4g}); the result is unusable. "
        "Check the model and its precision (fp16 overflow: try fp32 or bf16) and the conditioning."
    )


@torch.no_grad()
def sample_epd(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    *,
    params: EPDParams | None = None,
    num_points: int = 2,
    kind: Kind = DEFAULT_KIND,
    form: Form = DEFAULT_FORM,
    parallel: Parallel = DEFAULT_PARALLEL,
    chunk_size: int = 0,
    afs: bool | None = None,
    tail: Tail = DEFAULT_TAIL,
) -> torch.Tensor:
    """EPD-Solver, Zhu et al. (ICCV 2025)

    Each step makes two sequential model rounds: the anchor D(x_n, sigma_n) (skipped by
    AFS on the first step) and one batched call over the K intermediate points.

    params: the table (None: ``default_table`` with K = num_points for ``form``); kind: the
    model kind; form: how the K points combine; parallel / chunk_size: how they are
    evaluated; afs: None follows the table; tail: the rule for a ``[..., sigma_min, 0]``
    end (``plan.prepare_sigmas``). ``disable`` is accepted for signature compatibility;
    progress goes through ``callback``.
    """
    return run_epd(
        model, x, sigmas, extra_args, callback,
        params=params, num_points=num_points, kind=kind, form=form,
        parallel=parallel, chunk_size=chunk_size, afs=afs, tail=tail,
    )  # fmt: skip


@torch.no_grad()
def sample_epd_plugin(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    *,
    max_order: int = 3,
    params: EPDParams | None = None,
    num_points: int = 2,
    kind: Kind = DEFAULT_KIND,
    form: Form = DEFAULT_FORM,
    parallel: Parallel = DEFAULT_PARALLEL,
    chunk_size: int = 0,
    afs: bool | None = None,
    tail: Tail = DEFAULT_TAIL,
) -> torch.Tensor:
    """EPD-Plugin on iPNDM (docs/engine.md): Adams-Bashforth jumps to the K points.

    max_order: the Adams-Bashforth order, 1-4. The history holds the anchor directions
    d_n only, as upstream does. Other options as ``sample_epd``.
    """
    return run_epd(
        model, x, sigmas, extra_args, callback,
        params=params, num_points=num_points, kind=kind, form=form, parallel=parallel,
        chunk_size=chunk_size, afs=afs, tail=tail, max_order=max_order,
    )  # fmt: skip
