"""EPD Lagrange Sampler through ComfyUI's real KSAMPLER / CFGGuider path (issue 16 A).

The denoiser is exact (a Gaussian per class, tests/adapter/fakes.py), so the result is
compared with the closed-form ODE solution; a row that met another sample's conditioning
would be off by >= 1.5.
"""

from __future__ import annotations

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfy.samplers
import fakes
import torch
from comfyui_epd.nodes.lagrange_nodes import EPDLagrangeSampler
from torch.testing import assert_close

CLASSES = torch.tensor([0, 1, 2])
FAMILIES = [
    ("ModelSamplingDiscrete", "EPS", {}, "karras"),
    ("ModelSamplingDiscreteFlow", "CONST", {"shift": 3.0}, "simple"),
]


def run_node(ms, scheduler: str, steps: int, **inputs):
    """Execute the node, sample with its SAMPLER; returns (samples, records, guider, sigmas)."""
    sampler = EPDLagrangeSampler.execute(**inputs).result[0]
    guider = fakes.make_guider(ms, CLASSES)
    sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, steps).double()
    out, records = fakes.run(sampler, guider, sigmas, fakes.noise(len(CLASSES)))
    return out, records, guider, sigmas


def exact(ms, sigmas: torch.Tensor) -> torch.Tensor:
    x_start = ms.noise_scaling(sigmas[0], fakes.noise(3), torch.zeros_like(fakes.noise(3)), True)
    return fakes.exact_solution(ms, x_start, float(sigmas[0]), CLASSES)


@pytest.mark.parametrize(("schedule", "prediction", "params", "scheduler"), FAMILIES, ids=["sd-eps", "sd3-flow"])
@pytest.mark.parametrize("warm_start", [False, True])
def test_reaches_each_class_exact_solution(schedule, prediction, params, scheduler, warm_start):
    # 12 intervals of K=3 with two sweeps: the error against the closed form is far below a class gap (1.5).
    ms = fakes.model_sampling(schedule, prediction, **params)
    out, records, guider, sigmas = run_node(ms, scheduler, 12, order=3, refinements=2, warm_start=warm_start)
    assert_close(out, exact(ms, sigmas), atol=2e-2, rtol=0.0)
    assert [(i, b, bx) for i, b, bx, _ in records] == [(i, 3, 3) for i in range(12)], "one B-sized callback a step"
    rows = [r for r, _ in guider.inner_model.calls]
    assert 9 in rows, "the K=3 nodes of B=3 samples go into one call (cond + uncond share it at cfg 1)"


@pytest.mark.parametrize(("schedule", "prediction", "params", "scheduler"), FAMILIES, ids=["sd-eps", "sd3-flow"])
def test_more_sweeps_reduce_the_error(schedule, prediction, params, scheduler):
    ms = fakes.model_sampling(schedule, prediction, **params)
    errors = []
    for refinements in (0, 1, 2):
        out, _, _, sigmas = run_node(ms, scheduler, 8, order=2, refinements=refinements)
        errors.append(float((out - exact(ms, sigmas)).abs().max()))
    assert errors[0] > errors[1] > errors[2], errors


def test_batched_equals_sequential():
    ms = fakes.model_sampling()
    batched, *_ = run_node(ms, "karras", 6, order=3, refinements=2, parallel="batched")
    sequential, _, guider, _ = run_node(ms, "karras", 6, order=3, refinements=2, parallel="sequential")
    assert_close(batched, sequential, atol=1e-10, rtol=0.0)
    assert max(r for r, _ in guider.inner_model.calls) == 3


def test_inputs_not_mutated_dtype_kept():
    ms = fakes.model_sampling()
    sampler = EPDLagrangeSampler.execute(order=2, refinements=1).result[0]
    noise = fakes.noise(3, dtype=torch.float32)
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", 4)
    keep = noise.clone(), sigmas.clone()
    out, _ = fakes.run(sampler, fakes.make_guider(ms, CLASSES), sigmas, noise)
    assert out.dtype == torch.float32 and torch.equal(noise, keep[0]) and torch.equal(sigmas, keep[1])


def test_bad_input_named_with_the_node():
    assert "refinements >= 1" in EPDLagrangeSampler.validate_inputs(refinements=0, warm_start=True)
    assert EPDLagrangeSampler.validate_inputs(refinements=1, warm_start=True) is True
    ms = fakes.model_sampling()
    for inputs, match in (
        ({"order": 0}, r"EPD Lagrange Sampler: order=0 must be an integer between 1"),
        ({"refinements": -1}, r"EPD Lagrange Sampler: refinements=-1 must be an integer >= 0"),
        ({"nodes": "gauss"}, r"EPD Lagrange Sampler: nodes='gauss' is not one of"),
    ):
        with pytest.raises(ValueError, match=match):
            run_node(ms, "karras", 3, **inputs)
