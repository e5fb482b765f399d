"""EPD Sigmas: default grids from real model_sampling objects, table grids and their checks (§1.4, §1.5)."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import fakes
import torch
from comfyui_epd.epd_core import schedules
from comfyui_epd.epd_core.tables import default_table
from comfyui_epd.nodes.comfy import sampling
from comfyui_epd.nodes.sampler_nodes import EPDSampler, EPDSigmas
from comfyui_epd.nodes.table_nodes import EPDDefaultTable
from torch.testing import assert_close


class Flux:
    """Stands in for comfy.supported_models.Flux (the family check reads class names)."""


class FluxSchnell(Flux):
    pass


class SDXL:
    pass


def patcher(schedule="ModelSamplingDiscrete", prediction="EPS", config=None, **params):
    """What EPD Sigmas reads from a MODEL: get_model_object and model.model_config."""
    return fakes.FakeBaseModel(fakes.model_sampling(schedule, prediction, **params), config).current_patcher


def sigmas(model, **inputs) -> torch.Tensor:
    return EPDSigmas.execute(model=model, **inputs)[0]


def test_auto_grid_for_discrete_eps_models_is_karras_over_their_range():
    model = patcher()
    out = sigmas(model, steps=8)
    ms = model.get_model_object("model_sampling")
    lo, hi = float(ms.sigma_min), float(ms.sigma_max)
    expected = schedules.append_zero(schedules.get_sigmas_polynomial(9, lo, hi)).float()
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.equal(out, expected) and len(out) == 10 and out[-1] == 0


def test_auto_grid_for_flow_models_is_comfyuis_simple_with_their_shift():
    """auto = flow_uniform: after EPD Sampler's tail drop it equals ComfyUI's own "simple" schedule."""
    import comfy.samplers

    model = patcher("ModelSamplingDiscreteFlow", "CONST", shift=3.0)
    ms = model.get_model_object("model_sampling")
    sd3 = sigmas(model, steps=6)
    assert float(sd3[-2]) == pytest.approx(float(ms.sigma_min)) and float(sd3[-1]) == 0.0
    simple = comfy.samplers.calculate_sigmas(ms, "simple", 6)
    # simple picks from the model's 1000 discrete sigmas, so it matches up to that quantisation
    assert_close(torch.cat([sd3[:-2], sd3[-1:]]).double(), simple.double(), atol=2e-3, rtol=0)
    flux = sigmas(patcher("ModelSamplingFlux", "CONST", shift=1.15), steps=6)
    assert_close(flux[:-2].double(), schedules.get_sigmas_flow_uniform(6, mu=1.15), atol=1e-6, rtol=0)
    assert float(sd3[0]) == pytest.approx(1.0) and len(flux) == 8


def test_flowmatch_is_diffusers_grid_with_the_models_shift():
    model = patcher("ModelSamplingDiscreteFlow", "CONST", shift=3.0)
    sd3 = sigmas(model, steps=6, schedule="flowmatch")  # diffusers' 6-step grid, then ComfyUI's [sigma_min, 0] tail
    assert_close(sd3[:-2].double(), schedules.get_sigmas_flowmatch(6, shift=3.0), atol=1e-6, rtol=0)
    assert float(sd3[-2]) == pytest.approx(float(model.get_model_object("model_sampling").sigma_min))
    flux = sigmas(patcher("ModelSamplingFlux", "CONST", shift=1.15), steps=6, schedule="flowmatch", end_at_zero=False)
    assert_close(flux.double(), schedules.get_sigmas_flowmatch(7, mu=1.15), atol=1e-6, rtol=0)


def test_auto_grid_for_continuous_edm_is_polynomial():
    out = sigmas(patcher("ModelSamplingContinuousEDM", "EDM"), steps=5)
    assert_close(out[:-1].double(), schedules.get_sigmas_polynomial(6, 0.002, 120.0), rtol=1e-5, atol=0)


def test_named_schedules_and_their_errors():
    out = sigmas(patcher(), steps=4, schedule="logsnr")
    assert out[0] == pytest.approx(14.6146, rel=1e-4) and len(out) == 6
    with pytest.raises(ValueError, match=r"^EPD Sigmas: schedule 'discrete' needs .*choose auto"):
        sigmas(patcher("ModelSamplingDiscreteFlow", "CONST"), steps=4, schedule="discrete")
    with pytest.raises(ValueError, match=r"^EPD Sigmas: schedule 'flowmatch' needs a flow-matching model"):
        sigmas(patcher(), steps=4, schedule="flowmatch")


def test_table_grid_is_returned_after_the_fit_check():
    model = patcher()
    grid = sigmas(model, steps=6).double()
    table = default_table(grid, 2)
    assert torch.equal(sigmas(model, steps=99, table=table), grid.float())


def test_table_that_does_not_fit_the_model_is_refused():
    eps_grid = sigmas(patcher(), steps=4).double()
    flow_table = default_table(eps_grid).replace(metadata={"model_family": "sd3"})
    with pytest.raises(ValueError, match=r"EPD Sigmas: the table was made for a flow-matching model"):
        sigmas(patcher(), table=flow_table)
    sd15 = default_table(eps_grid).replace(metadata={"model_family": "SD1.5", "kind": "ve"})
    with pytest.raises(ValueError, match=r"EPD Sigmas: .*made for sd15.*the model is SDXL"):
        sigmas(patcher(config=SDXL()), table=sd15)
    assert len(sigmas(patcher(config=object()), table=sd15)) == 6, "unknown model configs are not judged"
    with pytest.raises(ValueError, match=r"EPD Sigmas: the table's grid starts at sigma 14.6.*sigma <= 1"):
        sigmas(patcher("ModelSamplingDiscreteFlow", "CONST"), table=default_table(eps_grid))


def test_family_check_follows_subclasses():
    grid = sigmas(patcher("ModelSamplingFlux", "CONST"), steps=4).double()
    flux = default_table(grid).replace(metadata={"model_family": "flux"})
    assert len(sigmas(patcher("ModelSamplingFlux", "CONST", config=FluxSchnell()), table=flux)) == 6


def test_sigmas_default_table_and_sampler_work_together(caplog):
    # EPD Sigmas -> EPD Default Table -> EPD Sampler over the same grid: no step or grid warnings.
    model = patcher()
    ms = model.get_model_object("model_sampling")
    grid = sigmas(model, steps=6)
    table = EPDDefaultTable.execute(sigmas=grid, num_points=3)[0]
    assert table.num_steps == 6 and table.num_points == 3  # tail drop: 8 sigmas -> 7 -> 6 steps
    sampler = EPDSampler.execute(table=table)[0]
    guider = fakes.make_guider(ms, torch.tensor([0, 1]))
    with caplog.at_level(logging.WARNING):
        out, records = fakes.run(sampler, guider, grid, fakes.noise(2, dtype=torch.float32))
    assert len(records) == 6 and torch.isfinite(out).all()
    assert "EPD" not in caplog.text
    assert sampling.auto_schedule(ms) == "polynomial"
