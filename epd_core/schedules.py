"""Sigma grids for EPD-Solver (`solver_utils.py::get_schedule`).

Every grid is a float64 CPU 1-D tensor of ``n`` points (``n`` = number of grid
points, so ``n - 1`` solver steps), strictly descending, ending at sigma_min and
not at 0. ComfyUI grids end ``[..., sigma_min, 0]``; use :func:`append_zero`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

_F64 = torch.float64


def _check_n(n: int) -> None:
    """Reject grid sizes below 2."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2 (number of grid points), got {n!r}; pass steps + 1.")


def _check_range(sigma_min: float, sigma_max: float) -> None:
    """Require finite 0 < sigma_min < sigma_max."""
    ok = math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0.0 < sigma_min < sigma_max
    if not ok:
        raise ValueError(
            f"need finite 0 < sigma_min < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}; "
            "swap or fix the range."
        )


def _check_positive(name: str, value: float) -> None:
    """Require a finite value > 0."""
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}.")


def _check_unit(name: str, value: float) -> None:
    """Require a value in the open interval (0, 1)."""
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}; the default is 1e-3.")


def _ramp(n: int) -> torch.Tensor:
    """Return i / (N - 1) for i = 0..N-1, float64."""
    return torch.linspace(0.0, 1.0, n, dtype=_F64)


def _rho_time(n: int, t_min: float, rho: float) -> torch.Tensor:
    """t_i = (1 + i/(N-1) (t_min^{1/rho} - 1))^rho, from t = 1 down to t_min (§3.4)."""
    return (1.0 + _ramp(n) * (t_min ** (1.0 / rho) - 1.0)) ** rho


def get_sigmas_polynomial(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM polynomial grid: sigma_i = (smax^{1/rho} + i/(N-1)(smin^{1/rho} - smax^{1/rho}))^rho."""
    _check_n(n)
    _check_range(sigma_min, sigma_max)
    _check_positive("rho", rho)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (hi + _ramp(n) * (lo - hi)) ** rho


def get_sigmas_logsnr(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Log-SNR uniform grid: sigma_i = exp(linspace(ln smax, ln smin, N))."""
    _check_n(n)
    _check_range(sigma_min, sigma_max)
    return torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=_F64).exp()


def get_sigmas_time_uniform(
    n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, eps_s: float = 1e-3
) -> torch.Tensor:
    """VP-fit time-uniform grid (ICCV runs, rho = 1).

    sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) with sigma(1) = sigma_max and
    sigma(eps_s) = sigma_min, evaluated at t_i = (1 + i/(N-1)(eps_s^{1/rho} - 1))^rho.
    """
    _check_n(n)
    _check_range(sigma_min, sigma_max)
    _check_positive("rho", rho)
    _check_unit("eps_s", eps_s)
    log_hi, log_lo = math.log1p(sigma_max**2), math.log1p(sigma_min**2)
    beta_d = 2.0 * (log_lo / eps_s - log_hi) / (eps_s - 1.0)
    beta_min = log_hi - 0.5 * beta_d
    t = _rho_time(n, eps_s, rho)
    return torch.expm1(0.5 * beta_d * t**2 + beta_min * t).sqrt()


def _check_model_sigmas(model_sigmas: torch.Tensor) -> torch.Tensor:
    """Return the model's discrete sigma table as float64 CPU; must be 1-D, positive, ascending."""
    table = torch.as_tensor(model_sigmas).detach().to(device="cpu", dtype=_F64)
    if table.ndim != 1 or table.numel() < 2:
        raise ValueError(f"model_sigmas must be 1-D with >= 2 entries, got shape {tuple(table.shape)}.")
    if not bool(torch.isfinite(table).all()) or not bool((table > 0).all()):
        raise ValueError("model_sigmas must be finite and > 0 (zero-terminal-SNR tables are not supported).")
    if not bool((table[1:] > table[:-1]).all()):
        raise ValueError("model_sigmas must be strictly ascending, like ComfyUI's model_sampling.sigmas; flip it.")
    return table


def _discrete_sigma_at(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """sigma(t) of a discrete VP model (§3.4): 0.5 log(abar) linear in t over knots t_j = (j+1)/M."""
    log_alpha = -0.5 * torch.log1p(table**2)  # 0.5 log(abar_j), abar_j = 1 / (1 + sigma_j^2)
    pos = (t * table.numel() - 1.0).clamp(0.0, table.numel() - 1.0)
    idx = pos.floor().long().clamp(max=table.numel() - 2)
    frac = pos - idx.to(_F64)
    la = log_alpha[idx] + frac * (log_alpha[idx + 1] - log_alpha[idx])
    return torch.expm1(-2.0 * la).sqrt()


def get_sigmas_discrete(n: int, model_sigmas: torch.Tensor, rho: float = 1.0, t_min: float = 1e-3) -> torch.Tensor:
    """LDM/SD "discrete" (TPAMI "Uniform") grid

    VP time t_i = (1 + i/(N-1)(t_min^{1/rho} - 1))^rho mapped through the model's
    discrete table. model_sigmas: [M] ascending (ComfyUI ``model_sampling.sigmas``).
    """
    _check_n(n)
    _check_positive("rho", rho)
    _check_unit("t_min", t_min)
    table = _check_model_sigmas(model_sigmas)
    return _discrete_sigma_at(table, _rho_time(n, t_min, rho))


def _shift_sd3(s: torch.Tensor | float, shift: float) -> Any:
    """SD3 static shift S(s) = shift s / (1 + (shift - 1) s)."""
    return shift * s / (1.0 + (shift - 1.0) * s)


def _shift_exp(s: torch.Tensor, mu: float) -> torch.Tensor:
    """FLUX exponential time shift e^mu / (e^mu + 1/s - 1)."""
    return math.exp(mu) / (math.exp(mu) + 1.0 / s - 1.0)


def get_sigmas_flowmatch(
    n: int, shift: float | None = None, mu: float | None = None, sigma_min_t: float = 1e-3
) -> torch.Tensor:
    """Flow-matching grid: diffusers FlowMatchEulerDiscreteScheduler, terminal 0 dropped.

    Static shift (SD3, shift=3): the scheduler's own range is S(1)..S(sigma_min_t), and
    set_timesteps applies the shift again, so sigma_i = S(linspace(1, S(sigma_min_t), N)).
    Dynamic shift (FLUX, mu=1.15): sigma_i = e^mu / (e^mu + 1/s_i - 1), s_i = linspace(1, sigma_min_t, N).
    Give at most one of ``shift`` / ``mu``; neither means shift = 1 (no shift).
    """
    _check_n(n)
    _check_unit("sigma_min_t", sigma_min_t)
    if shift is not None and mu is not None:
        raise ValueError(
            f"give either shift ({shift!r}, static SD3 shift) or mu ({mu!r}, FLUX dynamic shift), not both; "
            "dynamic shifting ignores the static shift, so drop shift for FLUX."
        )
    if mu is not None:
        if not math.isfinite(mu):
            raise ValueError(f"mu must be finite, got {mu!r}; FLUX.1-dev at 1024 px uses 1.15.")
        return _shift_exp(torch.linspace(1.0, sigma_min_t, n, dtype=_F64), mu)
    shift = 1.0 if shift is None else shift
    _check_positive("shift", shift)
    s = torch.linspace(1.0, _shift_sd3(sigma_min_t, shift), n, dtype=_F64)
    return _shift_sd3(s, shift)


def get_sigmas_flow_uniform(n: int, shift: float | None = None, mu: float | None = None) -> torch.Tensor:
    """Flow grid uniform in time: sigma_i = shift(1 - i / n), i = 0 .. n - 1 (the terminal 0 left off).

    With 0 appended this is ComfyUI's "simple" schedule on a shifted flow model: n steps that all
    cover real noise levels. diffusers' grid (``flowmatch``) instead ends its n points at the
    model's sigma_min, so with 0 appended its last step [sigma_min, 0] is spent on nothing; at
    3 steps that cost the per-family benchmark 2x error (bench/fmnist/bench_families.py).
    Static shift (SD3: ``shift``) or FLUX's dynamic shift (``mu``); neither means no shift.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a whole number >= 1 (the number of steps)")
    if shift is not None and mu is not None:
        raise ValueError(
            f"give either shift ({shift!r}, static SD3 shift) or mu ({mu!r}, FLUX dynamic shift), not both."
        )
    t = 1.0 - torch.arange(n, dtype=_F64) / n
    if mu is not None:
        out = _shift_exp(t, mu)
    else:
        shift = 1.0 if shift is None else shift
        _check_positive("shift", shift)
        out = _shift_sd3(t, shift)
    out[0] = 1.0  # both shifts fix t = 1; pin it so float round-off cannot start a flow grid above 1
    return out


_SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {
    "polynomial": get_sigmas_polynomial,
    "logsnr": get_sigmas_logsnr,
    "time_uniform": get_sigmas_time_uniform,
    "discrete": get_sigmas_discrete,
    "flowmatch": get_sigmas_flowmatch,
    "flow_uniform": get_sigmas_flow_uniform,
}
SCHEDULE_NAMES: tuple[str, ...] = tuple(_SCHEDULES)


def get_sigmas(name: str, n: int, **kw: Any) -> torch.Tensor:
    """Dispatch to ``get_sigmas_<name>``; kw are that function's arguments."""
    fn = _SCHEDULES.get(name)
    if fn is None:
        raise ValueError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULE_NAMES)}.")
    allowed = [p for p in inspect.signature(fn).parameters if p != "n"]
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(f"schedule {name!r} got unknown arguments {unknown}; it takes {', '.join(allowed)}.")
    return fn(n, **kw)


_BETAS: dict[str, Callable[[float, float, int], torch.Tensor]] = {
    # ComfyUI/LDM call this one "linear": betas linear in sqrt(beta).
    "scaled_linear": lambda b0, b1, m: torch.linspace(b0**0.5, b1**0.5, m, dtype=_F64) ** 2,
    "linear": lambda b0, b1, m: torch.linspace(b0, b1, m, dtype=_F64),
}


def vp_discrete_sigmas(
    beta_start: float = 0.00085, beta_end: float = 0.012, schedule: str = "scaled_linear", steps: int = 1000
) -> torch.Tensor:
    """Ascending discrete sigma table of a VP model (SD1.5 defaults)

    sigma_j = sqrt((1 - abar_j) / abar_j), abar_j = prod_{i<=j} (1 - beta_i); returns [steps] float64.
    """
    builder = _BETAS.get(schedule)
    if builder is None:
        raise ValueError(f"unknown beta schedule {schedule!r}; valid: {', '.join(_BETAS)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}; SD models use 1000.")
    if not (0.0 < beta_start < beta_end < 1.0):
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start!r}, {beta_end!r}.")
    abar = torch.cumprod(1.0 - builder(beta_start, beta_end, steps), dim=0)
    return ((1.0 - abar) / abar).sqrt()


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    """Append the terminal sigma = 0 of a ComfyUI grid: [N] -> [N+1]."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def drop_penultimate(sigmas: torch.Tensor) -> torch.Tensor:
    """Drop the second-to-last sigma ([..., a, b, 0] -> [..., a, 0]), as ComfyUI's discard-penultimate samplers do."""
    if sigmas.ndim != 1 or sigmas.numel() < 3:
        raise ValueError(f"drop_penultimate needs a 1-D grid of >= 3 sigmas, got shape {tuple(sigmas.shape)}.")
    return torch.cat([sigmas[:-2], sigmas[-1:]])
