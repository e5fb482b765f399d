"""ComfyUI boundary of the skip-the-middle nodes (issue 16 B): model kind, latent format, start scaling.

Everything is fitted in the model's own latent space (process_latent_in) and VE scaling.
The start LATENT is chosen so that SamplerCustomAdvanced with DisableNoise reaches the right
state: KSAMPLER computes x = noise_scaling(sigmas[0], 0, latent), which is latent for eps-type
models and (1 - t) * latent for CONST ones, so the latent is x / noise_scaling(t, 0, 1)
(other-seeds.md B.4: a flow start divided by (1 - t), never shrunk twice).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ...epd_core.skip import fit_start, latent_scale, sample_start, suggest_sigma_star, truncate_sigmas, ve_sigma
from ...epd_core.skip.fit import StartModel
from ...epd_core.skip.flow import FlowStart
from .sampling import kind_of


class FittedStart(NamedTuple):
    """The EPD_START_MODEL value: the fitted model, sigma* on the model's own scale, and its kind."""

    model: StartModel | FlowStart
    sigma: float
    kind: str


def _sampling(model: Any) -> Any:
    return model.get_model_object("model_sampling")


def check_sigma_star(model: Any, sigma: float, node: str) -> tuple[str, float]:
    """(kind, VE sigma) of sigma* on this model; ValueError when sigma* is outside the model's range."""
    ms = _sampling(model)
    kind, low, high = kind_of(ms), float(ms.sigma_min), float(ms.sigma_max)
    if not low < sigma <= high or (kind == "flow" and sigma >= 1.0):
        top = "< 1" if kind == "flow" else f"<= {high:.4g}"
        raise ValueError(f"{node}: sigma* = {sigma:.4g} is outside this model's sigma range: need {low:.4g} < sigma* "
                         f"{top}; the EPD Suggest Sigma* node proposes one")  # fmt: skip
    return kind, ve_sigma(sigma, kind)


def model_space(model: Any, latent: dict[str, Any], node: str) -> torch.Tensor:
    """The LATENT's samples in the model's latent space (latent format applied)."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None or samples.shape[0] == 0:
        raise ValueError(f"{node}: the reference LATENT is empty; connect VAE-encoded images or sampled latents")
    return model.model.process_latent_in(samples.to("cpu", torch.float64))


def fit(model: Any, latent: dict[str, Any], sigma: float, family: str, **options: Any) -> FittedStart:
    """Fit the start model at sigma* to the reference latents (EPD Fit Start Distribution)."""
    node = "EPD Fit Start Distribution"
    kind, s = check_sigma_star(model, sigma, node)
    try:
        return FittedStart(fit_start(model_space(model, latent, node), s, family, **options), sigma, kind)
    except ValueError as err:
        raise ValueError(f"{node}: {err}") from err


def start_latent(model: Any, fitted: FittedStart, batch: int, seed: int) -> dict[str, Any]:
    """A LATENT that, with noise disabled and sigmas starting at sigma*, is a draw of the fitted model."""
    kind = kind_of(_sampling(model))
    if kind != fitted.kind:
        raise ValueError(f"EPD Sample Start Latent: the start model was fitted for a {fitted.kind} model but this "
                         f"model is {kind}; fit it again with this model")  # fmt: skip
    y = sample_start(fitted.model, batch, torch.Generator().manual_seed(seed))
    state = latent_scale(fitted.sigma, kind) * y
    ones = torch.ones_like(y)
    scale = _sampling(model).noise_scaling(torch.tensor(fitted.sigma, dtype=y.dtype), torch.zeros_like(y), ones)
    return {"samples": model.model.process_latent_out(state / scale).float()}


def truncated(sigmas: torch.Tensor, fitted: FittedStart) -> torch.Tensor:
    """SIGMAS from sigma* on (EPD Truncate Sigmas)."""
    try:
        return truncate_sigmas(sigmas, fitted.sigma).to(sigmas.dtype)
    except ValueError as err:
        raise ValueError(f"EPD Truncate Sigmas: {err}") from err


def suggest(model: Any, latent: dict[str, Any], projections: int, seed: int) -> float:
    """sigma* on the model's own scale from the dip-test bisection, clamped to the model's range."""
    node = "EPD Suggest Sigma*"
    ms = _sampling(model)
    kind, low, high = kind_of(ms), float(ms.sigma_min), float(ms.sigma_max)
    top = ve_sigma(min(high, 0.999), kind) if kind == "flow" else high
    try:
        s = suggest_sigma_star(model_space(model, latent, node), projections=projections, seed=seed,
                               sigma_lo=ve_sigma(low, kind) * 1.01, sigma_hi=top)  # fmt: skip
    except ValueError as err:
        raise ValueError(f"{node}: {err}") from err
    return s / (1.0 + s) if kind == "flow" else s
