"""The toy MODEL is exact through ComfyUI's whole sampling path.

CFGGuider -> sampling_function -> calc_cond_batch -> BaseModel.apply_model ->
model_sampling.calculate_input / timestep / calculate_denoised must hand a sampler the
mixture's exact E[x0 | x] (the same numbers as epd_core.digits.ExactModel), per sample
class and under CFG, up to float32 (apply_model casts the network output to float32).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfy.samplers
import torch

from epd_core.baselines import run_euler
from epd_core.digits import ExactModel, reference_solution, solution_error
from epd_core.grids import epd_sigmas
from epd_core.solver import sample_epd
from testing_nodes.toy_model import (
    class_conditioning,
    class_context,
    denoiser_of,
    empty_conditioning,
    labels_from_context,
    toy_model_patcher,
)

B = 10
LABELS = torch.arange(B) % 10
SHAPE = (B, 1, 8, 8)
PROBE_SIGMAS = {"edm": (80.0, 12.0, 1.0, 0.05, 0.003), "flow": (1.0, 0.8, 0.4, 0.05, 0.002)}
REL_TOL = 1e-5  # float32 network output, relative to the size of the denoised values


def make_guider(mixture, kind: str, cfg: float) -> comfy.samplers.CFGGuider:
    guider = comfy.samplers.CFGGuider(toy_model_patcher(mixture, kind))
    guider.set_conds(class_conditioning(LABELS), empty_conditioning())
    guider.set_cfg(cfg)
    return guider


def noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def run(guider: comfy.samplers.CFGGuider, sampler, sigmas: torch.Tensor) -> torch.Tensor:
    z = noise()
    return guider.sample(z, torch.zeros_like(z), sampler, sigmas, disable_pbar=True, seed=0).double()


def probe_sampler(sigmas: tuple[float, ...], record: list, reps: int = 1) -> comfy.samplers.KSAMPLER:
    """A sampler that calls the model once per probe sigma on ``reps`` stacked copies of x."""

    def probe(model, x, _sigmas, extra_args=None, callback=None, disable=None):
        for i, sigma in enumerate(sigmas):
            xs = torch.cat([x * (1 + 0.1 * k) for k in range(reps)])
            svec = torch.cat([xs.new_full([x.shape[0]], sigma * 0.9**k) for k in range(reps)])
            record.append((xs, svec, model(xs, svec, **extra_args)))
            x = x * (sigmas[i + 1] / sigma if i + 1 < len(sigmas) else 1.0)
        return x

    return comfy.samplers.KSAMPLER(probe)


def max_rel_error(record: list, exact: ExactModel) -> float:
    worst = 0.0
    for xs, svec, out in record:
        want = exact(xs.double(), svec.double())
        worst = max(worst, ((out.double() - want).abs().max() / (1.0 + want.abs().max())).item())
    return worst


@pytest.mark.parametrize("kind", ["edm", "flow"])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_denoised_is_exact_per_sample_class(digits, kind: str, cfg: float) -> None:
    record: list = []
    grid = torch.tensor(PROBE_SIGMAS[kind] + (0.0,), dtype=torch.float64)
    run(make_guider(digits, kind, cfg), probe_sampler(PROBE_SIGMAS[kind], record), grid)
    assert max_rel_error(record, ExactModel(digits, LABELS, cfg, flow=kind == "flow")) < REL_TOL


def test_k_major_stack_keeps_each_rows_class(digits) -> None:
    """An EPD-style [K*B] call: ComfyUI repeats the B labels cyclically, row k*B + b gets label b."""
    record: list = []
    grid = torch.tensor(PROBE_SIGMAS["edm"] + (0.0,), dtype=torch.float64)
    guider = make_guider(digits, "edm", 3.0)
    run(guider, probe_sampler(PROBE_SIGMAS["edm"], record, reps=3), grid)
    assert max_rel_error(record, ExactModel(digits, LABELS, 3.0)) < REL_TOL
    assert denoiser_of(guider.model_patcher).calls == len(PROBE_SIGMAS["edm"])  # cond + uncond in one forward


@pytest.mark.parametrize("kind", ["edm", "flow"])
def test_builtin_euler_equals_engine_euler(digits, kind: str) -> None:
    guider = make_guider(digits, kind, 3.0)
    sigmas = comfy.samplers.calculate_sigmas(
        guider.model_patcher.get_model_object("model_sampling"), "karras" if kind == "edm" else "simple", 30
    ).double()
    out = run(guider, comfy.samplers.sampler_object("euler"), sigmas)
    start = noise() * (
        sigmas[0] if kind == "flow" else torch.sqrt(1 + sigmas[0] ** 2)
    )  # KSAMPLER's noise_scaling (max_denoise)
    want = run_euler(ExactModel(digits, LABELS, 3.0, flow=kind == "flow"), start, sigmas)
    assert (out - want).abs().max().item() < 1e-4


@pytest.mark.parametrize("cfg", [1.0, 7.5])
def test_fine_builtin_solves_converge_to_the_engine_reference(digits, cfg: float) -> None:
    """Euler shrinks its error ~10x from 10 to 100 steps (first order), Heun ~4x from 25 to 50 (second order)."""
    guider = make_guider(digits, "edm", cfg)
    model_sampling = guider.model_patcher.get_model_object("model_sampling")
    start = (noise() * (1 + 80.0**2) ** 0.5).reshape(B, -1)  # sigma_max = 80 and KSAMPLER's max_denoise scaling
    ref = reference_solution(ExactModel(digits, LABELS, cfg), start, steps=150).reshape(SHAPE)
    err = {}
    for name, steps in (("euler", 10), ("euler", 100), ("heun", 25), ("heun", 50)):
        sigmas = comfy.samplers.calculate_sigmas(model_sampling, "karras", steps).double()
        err[name, steps] = solution_error(run(guider, comfy.samplers.sampler_object(name), sigmas), ref)
    assert err["euler", 100] < 0.15 * err["euler", 10]
    assert err["heun", 50] < 0.03  # mean L2 over 64 pixels in [-1, 1]: under 1e-2 of the norm
    assert 3.0 < err["heun", 25] / err["heun", 50] < 5.0


def test_epd_batched_equals_sequential_through_cfg(digits) -> None:
    grid = epd_sigmas(4, 0.002, 80.0)
    outs = {}
    for mode in ("batched", "sequential"):
        guider = make_guider(digits, "edm", 7.5)
        options = {"kind": "ve", "form": "data", "parallel": mode, "tail": "keep", "afs": True}
        outs[mode] = run(guider, comfy.samplers.KSAMPLER(sample_epd, extra_options=options), grid)
        rounds = 2 * 4 - 1 if mode == "batched" else 3 * 4 - 1
        assert denoiser_of(guider.model_patcher).calls == rounds
    assert (outs["batched"] - outs["sequential"]).abs().max().item() < 1e-5


def test_labels_from_context() -> None:
    context = torch.cat([class_context([3, 0]), torch.zeros(1, 1, class_context(0).shape[-1])])
    assert labels_from_context(context, 3).tolist() == [3, 0, -1]
    assert labels_from_context(None, 2).tolist() == [-1, -1]


def test_class_context_rejects_out_of_range_labels() -> None:
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 15\]"):
        class_context([1, 16])


def test_unknown_kind_names_the_choices(digits) -> None:
    with pytest.raises(ValueError, match="'edm'"):
        toy_model_patcher(digits, "vp")


def test_test_nodes_register_and_build_a_model() -> None:
    import nodes

    folder = Path(__file__).resolve().parents[2] / "testing_nodes"
    assert asyncio.run(nodes.load_custom_node(str(folder)))
    mapping = nodes.NODE_CLASS_MAPPINGS
    assert {"EPDTest_ToyModel", "EPDTest_ClassConditioning"} <= set(mapping)
    cond = mapping["EPDTest_ClassConditioning"].execute(label=0, labels="1, 2,3")[0]
    assert labels_from_context(cond[0][0], 3).tolist() == [1, 2, 3]
    assert labels_from_context(mapping["EPDTest_ClassConditioning"].execute(label=-1)[0][0][0], 1).tolist() == [-1]
