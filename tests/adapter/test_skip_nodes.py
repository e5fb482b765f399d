"""Skip-the-middle nodes through ComfyUI's real KSAMPLER path (issue 16 B).

The data of one class of tests/adapter/fakes.py is a single Gaussian N(m, 0.25 I), so a
full Gaussian fitted to its samples is (up to sampling error) the exact noised distribution
at sigma*. Starting there with noise disabled must then give the data distribution, as a
full-horizon run does; a flow start that is shrunk by (1 - sigma*) must not.
"""

from __future__ import annotations

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfy.latent_formats
import comfy.samplers
import fakes
import torch
from comfyui_epd.nodes.skip_nodes import EPDFitStart, EPDSampleStart, EPDSuggestSigmaStar, EPDTruncateSigmas

N = 2000
CLASS = 1
FAMILIES = [
    ("ModelSamplingDiscrete", "EPS", {}, 2.0),
    ("ModelSamplingDiscreteFlow", "CONST", {"shift": 3.0}, 0.6),
]


class LatentModel:
    """What the nodes read from a MODEL: model_sampling and SD1.5's latent format (scale 0.18215)."""

    def __init__(self, ms) -> None:
        fmt = comfy.latent_formats.SD15()
        self.ms = ms
        self.model = type("Inner", (), {"process_latent_in": staticmethod(fmt.process_in),
                                        "process_latent_out": staticmethod(fmt.process_out)})  # fmt: skip

    def get_model_object(self, name: str):
        return self.ms


def reference(model: LatentModel, n: int = N) -> dict:
    """Exact clean samples of one class, as a LATENT in the VAE's space."""
    x0 = fakes.MIX.sample(n, torch.Generator().manual_seed(0), torch.full((n,), CLASS))
    return {"samples": model.model.process_latent_out(x0.reshape(n, *fakes.SHAPE)).float()}


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.flatten(1).double()
    return flat.mean(0), torch.cov(flat.T)


def sample_from(ms, sigmas, noise, latent) -> torch.Tensor:
    guider = fakes.make_guider(ms, torch.full((noise.shape[0],), CLASS))
    return fakes.run(comfy.samplers.ksampler("euler"), guider, sigmas, noise, latent=latent)[0]


@pytest.mark.parametrize(("schedule", "prediction", "params", "sigma_star"), FAMILIES, ids=["eps", "flow"])
def test_start_at_sigma_star_matches_the_full_horizon_in_distribution(schedule, prediction, params, sigma_star):
    # Truth: N(m, 0.25 I). 2000 samples: the standard error of a mean entry is 0.5 / sqrt(2000) ~ 0.011,
    # of a covariance entry ~ 0.25 * sqrt(2 / 2000) ~ 0.008; 40 Euler steps add ~0.01.
    ms = fakes.model_sampling(schedule, prediction, **params)
    model = LatentModel(ms)
    fitted = EPDFitStart.execute(model, reference(model), sigma_star, "gaussian").result[0]
    latent = EPDSampleStart.execute(model, fitted, N, 1).result[0]["samples"].double()
    full = comfy.samplers.calculate_sigmas(ms, "karras", 40).double()
    short = EPDTruncateSigmas.execute(full, fitted).result[0]
    assert short[0].item() == pytest.approx(sigma_star) and (short[1:] < sigma_star).all()
    # SamplerCustomAdvanced with DisableNoise: zero noise, the start latent in the model's space
    start = model.model.process_latent_in(latent)
    skipped = sample_from(ms, short, torch.zeros_like(start), start)
    whole = sample_from(ms, full, fakes.noise(N, seed=2), torch.zeros_like(start))
    mean, cov = moments(skipped)
    truth = fakes.MIX.means[CLASS]
    torch.testing.assert_close(mean, truth, atol=0.05, rtol=0)
    torch.testing.assert_close(cov, 0.25 * torch.eye(fakes.DIM, dtype=torch.float64), atol=0.05, rtol=0)
    # the full-horizon start N(0, 1 + sigma_max^2) misses the data mean by ~m / sigma_max (<= 0.09 here)
    torch.testing.assert_close(mean, moments(whole)[0], atol=0.12, rtol=0)
    torch.testing.assert_close(cov, moments(whole)[1], atol=0.05, rtol=0)


def test_a_flow_start_shrunk_by_one_minus_sigma_is_visibly_wrong():
    # The pitfall of other-seeds.md B.4: passing the flow state x = (1 - t) y as the latent makes
    # KSAMPLER scale it by (1 - t) again. The ODE from t = 0.6 only partly pulls the mean back:
    # measured error 0.16..0.40 per entry, against <= 0.05 for the correct start above.
    ms = fakes.model_sampling("ModelSamplingDiscreteFlow", "CONST", shift=3.0)
    model = LatentModel(ms)
    fitted = EPDFitStart.execute(model, reference(model), 0.6, "gaussian").result[0]
    start = model.model.process_latent_in(EPDSampleStart.execute(model, fitted, 500, 1).result[0]["samples"].double())
    short = EPDTruncateSigmas.execute(comfy.samplers.calculate_sigmas(ms, "simple", 20).double(), fitted).result[0]
    wrong = sample_from(ms, short, torch.zeros_like(start), 0.4 * start)
    assert (moments(wrong)[0] - fakes.MIX.means[CLASS]).abs().max() > 0.25


@pytest.mark.parametrize(
    ("prediction", "sigma", "inputs", "message"),
    [
        ("EPS", 20.0, {}, r"EPD Fit Start Distribution: sigma\* = 20 is outside .* <= 14.6"),
        ("CONST", 1.0, {}, r"sigma\* = 1 is outside .* < 1"),
        ("EPS", 2.0, {"n": 0}, "reference LATENT is empty"),
        ("EPS", 2.0, {"n": 10}, r"more samples than dimensions: got 10 samples of dimension 16.*'lowrank'"),
    ],
)
def test_bad_input_names_the_node_and_the_fix(prediction, sigma, inputs, message):
    schedule = "ModelSamplingDiscreteFlow" if prediction == "CONST" else "ModelSamplingDiscrete"
    model = LatentModel(fakes.model_sampling(schedule, prediction))
    with pytest.raises(ValueError, match=message):
        EPDFitStart.execute(model, reference(model, inputs.get("n", 50)), sigma, "gaussian")


def test_start_model_from_another_kind_and_a_too_high_sigma_star_are_rejected():
    eps = LatentModel(fakes.model_sampling("ModelSamplingDiscrete", "EPS"))
    flow = LatentModel(fakes.model_sampling("ModelSamplingDiscreteFlow", "CONST", shift=3.0))
    fitted = EPDFitStart.execute(eps, reference(eps, 50), 2.0, "diagonal").result[0]
    with pytest.raises(ValueError, match="fitted for a ve model but this model is flow"):
        EPDSampleStart.execute(flow, fitted, 2, 0)
    with pytest.raises(ValueError, match=r"EPD Truncate Sigmas: no sigma .* below sigma\* = 2"):
        EPDTruncateSigmas.execute(torch.tensor([1.5, 1.0, 0.0]) + 10.0, fitted)


def test_suggested_sigma_star_is_inside_the_model_range():
    # One Gaussian class is unimodal at every sigma: the bisection ends at the bottom of the range.
    for schedule, prediction, params, _ in FAMILIES:
        ms = fakes.model_sampling(schedule, prediction, **params)
        model = LatentModel(ms)
        sigma = EPDSuggestSigmaStar.execute(model, reference(model, 200), 4, 0).result[0]
        assert float(ms.sigma_min) < sigma < min(float(ms.sigma_max), 1.0 if prediction == "CONST" else 1e9)


def test_family_options_keep_their_order_and_flow_steps_is_appended():
    # Saved workflows store widget values by position: existing options and inputs must not move.
    inputs = EPDFitStart.define_schema().inputs
    family = next(i for i in inputs if i.id == "family")
    assert family.options == ["gaussian", "diagonal", "lowrank", "gmm", "normalizing_flow"]
    assert [i.id for i in inputs][-2:] == ["seed", "flow_steps"] and inputs[-1].optional


@pytest.mark.parametrize(("schedule", "prediction", "params", "sigma_star"), FAMILIES, ids=["eps", "flow"])
def test_normalizing_flow_start_reaches_the_data_distribution(schedule, prediction, params, sigma_star):
    # The flow models 8 of the 16 principal directions, the other 8 get the PCA floor (all 0.25 here).
    # Measured (200 steps, 1000 draws, EPS and flow): mean error 0.034-0.037 and variances 0.21-0.25 per
    # entry after the Euler run to 0; the standard error of a variance from 1000 draws is ~0.011.
    ms = fakes.model_sampling(schedule, prediction, **params)
    model = LatentModel(ms)
    fitted = EPDFitStart.execute(model, reference(model), sigma_star, "normalizing_flow", 8, 4, 0, 200).result[0]
    latent = EPDSampleStart.execute(model, fitted, 1000, 1).result[0]["samples"].double()
    short = EPDTruncateSigmas.execute(comfy.samplers.calculate_sigmas(ms, "karras", 40).double(), fitted).result[0]
    start = model.model.process_latent_in(latent)
    mean, cov = moments(sample_from(ms, short, torch.zeros_like(start), start))
    torch.testing.assert_close(mean, fakes.MIX.means[CLASS], atol=0.07, rtol=0)
    torch.testing.assert_close(cov.diagonal(), torch.full((fakes.DIM,), 0.25, dtype=torch.float64), atol=0.07, rtol=0)
