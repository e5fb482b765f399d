"""Steps mean steps: EPD Sigmas(steps=N) + EPD Sampler spend exactly 2N model rounds (2N - 1 with
AFS) on every model family, through ComfyUI's real model_sampling classes (issue 12)."""

from __future__ import annotations

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import fakes
import torch
from comfyui_epd.nodes.comfy import sampling
from comfyui_epd.nodes.sampler_nodes import EPDSigmas

FAMILIES = {
    "sd15-eps": ("ModelSamplingDiscrete", "EPS", {}),
    "sd2-v": ("ModelSamplingDiscrete", "V_PREDICTION", {}),
    "edm": ("ModelSamplingContinuousEDM", "EDM", {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5}),
    "sd3-flow": ("ModelSamplingDiscreteFlow", "CONST", {"shift": 3.0}),
    "flux-flow": ("ModelSamplingFlux", "CONST", {"shift": 1.15}),
}
CLASSES = torch.tensor([0, 2])


def rounds(family: str, steps: int, afs: str) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Model rounds one EPD Sampler run makes on EPD Sigmas(steps) (cfg 1: one call per round)."""
    schedule, prediction, params = FAMILIES[family]
    ms = fakes.model_sampling(schedule, prediction, **params)
    sigmas = EPDSigmas.execute(model=fakes.FakeBaseModel(ms).current_patcher, steps=steps)[0]
    guider = fakes.make_guider(ms, CLASSES)
    noise = fakes.noise(len(CLASSES))
    out, _ = fakes.run(sampling.make_sampler(num_points=2, afs=afs), guider, sigmas.double(), noise)
    return len(guider.inner_model.calls), sigmas, out


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("steps", [1, 3, 6])
def test_steps_are_steps_on_every_family(family: str, steps: int) -> None:
    calls, sigmas, out = rounds(family, steps, afs="off")
    assert calls == 2 * steps, f"{family}: {calls} rounds for {steps} steps on {sigmas.tolist()}"
    assert torch.isfinite(out).all()
    calls_afs, _, _ = rounds(family, steps, afs="on")
    assert calls_afs == 2 * steps - 1, f"{family}: {calls_afs} rounds with AFS"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_epd_sigmas_end_like_comfyui_schedulers(family: str) -> None:
    # [..., the model's sigma_min, 0], as ComfyUI's own schedulers end, so built-in samplers
    # read the grid as usual and EPD Sampler's tail rule drops the sliver.
    schedule, prediction, params = FAMILIES[family]
    ms = fakes.model_sampling(schedule, prediction, **params)
    sigmas = EPDSigmas.execute(model=fakes.FakeBaseModel(ms).current_patcher, steps=4)[0]
    assert len(sigmas) == 6 and float(sigmas[-1]) == 0.0
    assert float(sigmas[-2]) == pytest.approx(float(ms.sigma_min), rel=1e-6)
    assert bool((sigmas[1:] < sigmas[:-1]).all())
