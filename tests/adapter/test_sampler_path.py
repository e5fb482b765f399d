"""EPD through ComfyUI's real KSAMPLER / CFGGuider path.

The denoiser is exact (a Gaussian per class, tests/adapter/fakes.py), so results can be
compared with the closed-form ODE solution, and a row that meets another sample's
conditioning is off by the distance between class means (>= 1.5).
"""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfy.model_management
import comfy.samplers
import fakes
import torch
from comfyui_epd.epd_core.solver import prepare_sigmas
from comfyui_epd.epd_core.tables import default_table
from comfyui_epd.nodes.comfy import sampling
from torch.testing import assert_close

CLASSES = torch.tensor([0, 1, 2])
TIGHT = {"atol": 1e-10, "rtol": 0.0}  # batched vs sequential: same arithmetic, different batch sizes


def karras(ms, steps: int) -> torch.Tensor:
    """ComfyUI's own karras sigmas for the model, float64."""
    return comfy.samplers.calculate_sigmas(ms, "karras", steps).double()


def sample(ms, classes=CLASSES, steps=10, cfg=1.0, sigmas=None, **options):
    """One EPD run through KSAMPLER; returns (samples, callback records, guider)."""
    guider = fakes.make_guider(ms, classes, cfg=cfg)
    sigmas = karras(ms, steps) if sigmas is None else sigmas
    noise = fakes.noise(len(classes))
    mask, latent = options.pop("mask", None), options.pop("latent", None)
    model_options = options.pop("model_options", None)
    sampler = sampling.make_sampler(**options)
    out, records = fakes.run(sampler, guider, sigmas, noise, latent=latent, mask=mask, model_options=model_options)
    return out, records, guider


def start_state(ms, sigmas: torch.Tensor, batch: int) -> torch.Tensor:
    """x_T as KSAMPLER builds it from a full-noise start (max_denoise)."""
    noise = fakes.noise(batch)
    return ms.noise_scaling(sigmas[0], noise, torch.zeros_like(noise), True)


@pytest.mark.parametrize(
    ("schedule", "prediction", "params"),
    [("ModelSamplingDiscrete", "EPS", {}), ("ModelSamplingDiscreteFlow", "CONST", {"shift": 3.0})],
    ids=["sd-eps", "sd3-flow"],
)
def test_per_sample_conditioning_follows_k_major_order(schedule, prediction, params):
    # Three samples with three different classes: after 20 steps each must sit at its own
    # class's exact ODE solution (the direction-form error is ~0.01, a wrong class is >= 1.5 away).
    ms = fakes.model_sampling(schedule, prediction, **params)
    sigmas = karras(ms, 20) if prediction == "EPS" else comfy.samplers.calculate_sigmas(ms, "simple", 20).double()
    out, _, guider = sample(ms, sigmas=sigmas, num_points=3, form="direction")
    exact = fakes.exact_solution(ms, start_state(ms, sigmas, 3), float(sigmas[0]), CLASSES)
    assert_close(out, exact, atol=3e-2, rtol=0.0)
    assert 9 in {rows for rows, _ in guider.inner_model.calls}, "the K=3 points of B=3 samples form one call"


def test_batch_equals_each_sample_alone():
    out, _, _ = sample(fakes.model_sampling(), cfg=3.0)
    for b, cls in enumerate(CLASSES.tolist()):
        guider = fakes.make_guider(fakes.model_sampling(), torch.tensor([cls]), cfg=3.0)
        alone, _ = fakes.run(
            sampling.make_sampler(), guider, karras(guider.inner_model.model_sampling, 10), fakes.noise(3)[b : b + 1]
        )
        assert_close(out[b : b + 1], alone, **TIGHT)


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_batched_equals_sequential_and_chunked(cfg):
    ms = fakes.model_sampling()
    batched, _, g_batched = sample(ms, cfg=cfg, num_points=3, parallel="batched")
    sequential, _, g_seq = sample(ms, cfg=cfg, num_points=3, parallel="sequential")
    chunked, _, g_chunk = sample(ms, cfg=cfg, num_points=3, parallel="batched", chunk_size=2)
    assert_close(batched, sequential, **TIGHT)
    assert_close(batched, chunked, **TIGHT)
    rows = 3 * (2 if cfg > 1 else 1)  # cond and uncond share one forward when cfg > 1
    assert {r for r, _ in g_seq.inner_model.calls} == {rows}
    assert {r for r, _ in g_batched.inner_model.calls} == {rows, 3 * rows}
    assert {r for r, _ in g_chunk.inner_model.calls} == {rows, 2 * rows}


def test_point_sigmas_are_k_major():
    # In a batched call the sigma vector is [tau_0]*B + [tau_1]*B (+ the same again for uncond).
    _, _, guider = sample(fakes.model_sampling(), num_points=2)
    _, sigma = next((r, s) for r, s in guider.inner_model.calls if r == 6)
    assert torch.equal(sigma[:3], sigma[0].expand(3)) and torch.equal(sigma[3:], sigma[3].expand(3))
    assert sigma[0] > sigma[3], "points are ordered from high to low noise"


def test_one_callback_per_step_at_batch_b():
    out, records, _ = sample(fakes.model_sampling(), steps=10, num_points=2)
    # karras(10) = 11 sigmas ending [..., sigma_min, 0]; tail=drop leaves 9 EPD steps, and the
    # index is stretched so the progress bar (10 steps) still ends at 10/10.
    assert len(records) == 9
    assert all(den == 3 and x == 3 and total == 10 for _, den, x, total in records)
    assert [i for i, *_ in records] == sorted({i for i, *_ in records}) and records[-1][0] == 9
    assert out.shape == (3, *fakes.SHAPE)


def test_tail_keep_and_stop():
    ms = fakes.model_sampling()
    _, keep, _ = sample(ms, steps=6, tail="keep")
    _, stop, _ = sample(ms, steps=6, tail="stop")
    assert [i for i, *_ in keep] == list(range(6))
    assert len(stop) == 5


def inpaint_inputs(ms, sigmas):
    """Two samples, two different masks (left / top half), a non-zero latent."""
    mask = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    mask[0, :, :, 0] = 1.0
    mask[1, :, 0, :] = 1.0
    latent = fakes.MIX.means[torch.tensor([2, 0])].reshape(2, *fakes.SHAPE)
    return mask.expand(2, fakes.SHAPE[0], 2, 2), latent


def test_inpainting_batched_equals_sequential():
    ms = fakes.model_sampling()
    sigmas = karras(ms, 8)
    mask, latent = inpaint_inputs(ms, sigmas)
    classes = torch.tensor([0, 1])
    runs = {p: sample(ms, classes, sigmas=sigmas, parallel=p, mask=mask, latent=latent) for p in ("auto", "sequential")}
    (auto, _, g_auto), (seq, _, _) = runs["auto"], runs["sequential"]
    assert_close(auto, seq, **TIGHT)
    assert 4 in {r for r, _ in g_auto.inner_model.calls}, "auto keeps the K*B batch under a tileable mask"
    keep = mask == 0
    assert_close(auto[keep], latent[keep], atol=1e-12, rtol=0.0)


def differential_mask(sigma, denoise_mask, extra_options):
    """A denoise-mask function that reads sigma[0], like Differential Diffusion."""
    return (denoise_mask >= float(sigma[0]) / 20.0).to(denoise_mask.dtype)


def test_mask_function_makes_auto_sequential(caplog):
    ms = fakes.model_sampling()
    sigmas = karras(ms, 6)
    mask, latent = inpaint_inputs(ms, sigmas)
    options = {"denoise_mask_function": differential_mask}
    with caplog.at_level(logging.WARNING):
        _, _, guider = sample(ms, torch.tensor([0, 1]), sigmas=sigmas, mask=mask, latent=latent, model_options=options)
    assert {r for r, _ in guider.inner_model.calls} == {2}
    assert "one at a time" in caplog.text
    with pytest.raises(ValueError, match=r"EPD Sampler: parallel='batched' cannot run here.*auto or sequential"):
        sample(
            ms, torch.tensor([0, 1]), sigmas=sigmas, mask=mask, latent=latent, model_options=options, parallel="batched"
        )


def test_interrupt_raises_from_the_step_callback():
    def cancel(i, *_):
        if i == 1:
            comfy.model_management.interrupt_current_processing(True)

    guider = fakes.make_guider(fakes.model_sampling(), CLASSES)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            fakes.run(
                sampling.make_sampler(),
                guider,
                karras(guider.inner_model.model_sampling, 10),
                fakes.noise(3),
                callback=cancel,
            )
        assert not comfy.model_management.processing_interrupted(), "the flag is consumed by the raise"
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert len(guider.inner_model.calls) <= 2 * 2 + 1, "sampling stopped right after step 1"


def test_afs_only_from_full_noise(caplog):
    ms = fakes.model_sampling()
    full = karras(ms, 8)
    _, _, on = sample(ms, sigmas=full, afs="on")
    _, _, off = sample(ms, sigmas=full, afs="off")
    assert len(off.inner_model.calls) - len(on.inner_model.calls) == 1, "AFS skips exactly the first anchor call"
    img2img = full[3:]  # what denoise < 1 produces: the start is below sigma_max
    with caplog.at_level(logging.INFO):
        _, _, partial_on = sample(ms, sigmas=img2img, afs="on")
    _, _, partial_off = sample(ms, sigmas=img2img, afs="off")
    assert len(partial_on.inner_model.calls) == len(partial_off.inner_model.calls)
    assert "AFS skipped" in caplog.text


def test_table_step_count_is_checked():
    ms = fakes.model_sampling()
    table = default_table(prepare_sigmas(karras(ms, 6), "drop"), 2)
    with pytest.raises(ValueError, match=r"EPD Sampler: EPD table has 5 steps but the sigmas give 7.*EPD Sigmas"):
        sample(ms, steps=8, params=table)
    out, records, _ = sample(ms, steps=6, params=table)  # [..., sigma_min, 0] -> drop -> 5 steps
    assert len(records) == 5 and torch.isfinite(out).all()


def test_table_on_another_grid_warns_once_and_rebases(caplog):
    ms = fakes.model_sampling()
    sigmas = karras(ms, 6)
    other = comfy.samplers.calculate_sigmas(ms, "exponential", 6).double()
    table = default_table(prepare_sigmas(other, "drop"), kind="uniform")
    with caplog.at_level(logging.WARNING):
        rebased, _, _ = sample(ms, sigmas=sigmas, params=table)
    assert caplog.text.count("differ from the table's grid") == 1
    own = default_table(prepare_sigmas(sigmas, "drop"), kind="uniform")
    same, _, _ = sample(ms, sigmas=sigmas, params=own)
    assert_close(rebased, same, **TIGHT)  # uniform r/lam do not depend on the grid: only tau moves


def test_table_for_a_flow_model_is_refused_on_an_eps_model():
    ms = fakes.model_sampling()
    table = default_table(prepare_sigmas(karras(ms, 6), "drop")).replace(metadata={"kind": "flow"})
    with pytest.raises(ValueError, match=r"EPD Sampler: the table was made for a flow-matching model.*ModelSampling"):
        sample(ms, steps=6, params=table)


def test_plugin_runs_and_differs_from_plain():
    ms = fakes.model_sampling()
    plain, _, _ = sample(ms, steps=8, plugin="off")
    plugin, records, _ = sample(ms, steps=8, plugin="on", max_order=3)
    assert len(records) == 7 and not torch.allclose(plain, plugin)


@pytest.mark.parametrize(
    ("schedule", "prediction", "params", "expected"),
    [("ModelSamplingDiscrete", "EPS", {}, "on"), ("ModelSamplingDiscreteFlow", "CONST", {"shift": 3.0}, "off")],
    ids=["sd-eps", "sd3-flow"],
)
def test_plugin_auto_is_on_for_eps_and_off_for_flow(schedule, prediction, params, expected):
    ms = fakes.model_sampling(schedule, prediction, **params)
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", 6).double()
    runs = {choice: sample(ms, sigmas=sigmas, plugin=choice)[0] for choice in ("auto", "on", "off")}
    assert_close(runs["auto"], runs[expected], atol=0.0, rtol=0.0)
    assert not torch.allclose(runs["on"], runs["off"])
    assert_close(sample(ms, sigmas=sigmas, plugin=expected == "on")[0], runs["auto"], atol=0.0, rtol=0.0)


def test_inputs_untouched_and_dtype_kept():
    ms = fakes.model_sampling()
    guider = fakes.make_guider(ms, CLASSES)
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", 6)
    noise = fakes.noise(3, dtype=torch.float32)
    before = (sigmas.clone(), noise.clone())
    out, _ = fakes.run(sampling.make_sampler(), guider, sigmas, noise)
    assert torch.equal(sigmas, before[0]) and torch.equal(noise, before[1])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_sigmas_must_decrease():
    ms = fakes.model_sampling()
    with pytest.raises(ValueError, match=r"^EPD Sampler: the sigmas must strictly decrease, got \[14.6146, 3.0, 3.0"):
        sample(ms, sigmas=torch.tensor([14.6146, 3.0, 3.0, 1.0, 0.0], dtype=torch.float64))


def test_too_few_sigmas_return_the_input():
    x = fakes.noise(2)
    assert sampling.sample_epd_comfy(object(), x, torch.tensor([1.0])) is x


def test_model_kind_and_model_sampling_lookup():
    flow, eps = fakes.model_sampling("ModelSamplingDiscreteFlow", "CONST"), fakes.model_sampling()
    assert sampling.kind_of(flow) == "flow" and sampling.kind_of(eps) == "ve"
    guider = fakes.make_guider(flow, CLASSES)
    model_k = comfy.samplers.KSamplerX0Inpaint(guider, torch.ones(2))
    assert sampling.model_sampling_of(model_k) is flow
    del guider.model_patcher  # the fallback: guider.inner_model.model_sampling
    assert sampling.model_sampling_of(model_k) is flow
    with pytest.raises(TypeError, match="EPD Sampler: cannot find the model's model_sampling"):
        sampling.model_sampling_of(object())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_float32_on_the_device_batched_equals_sequential(device):
    # What a GPU run sees: float32 sigmas, noise, latent and mask on the device, a float64 CPU table.
    ms = fakes.model_sampling()
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", 8).to(device)
    mask = torch.ones(2, *fakes.SHAPE, device=device)
    mask[1, :, 0, :] = 0.0
    latent = torch.full((2, *fakes.SHAPE), 0.5, device=device)
    results = {}
    for parallel in ("batched", "sequential"):
        guider = fakes.make_guider(ms, torch.tensor([0, 2]))
        noise = fakes.noise(2, dtype=torch.float32).to(device)
        sampler = sampling.make_sampler(parallel=parallel, num_points=3)
        results[parallel], records = fakes.run(sampler, guider, sigmas, noise, latent=latent, mask=mask)
        assert len(records) == 7
    assert results["batched"].device.type == device and results["batched"].dtype == torch.float32
    assert_close(results["batched"], results["sequential"], atol=1e-5, rtol=1e-5)


def test_tail_auto_drops_only_the_models_own_sigma_min():
    ms = fakes.model_sampling()
    _, comfy_grid, _ = sample(ms, steps=6)  # karras ends [..., sigma_min, 0]: dropped
    assert len(comfy_grid) == 5
    epd_grid = torch.tensor([14.6, 5.0, 2.0, 0.5, 0.0], dtype=torch.float64)  # already ends on 0 without sigma_min
    _, records, _ = sample(ms, sigmas=epd_grid)
    assert len(records) == 4, "a grid without ComfyUI's sigma_min tail is used as given"


@pytest.mark.parametrize(
    ("cfg", "plugin", "expected"),
    [(1.0, "off", "direction"), (3.0, "off", "data"), (7.5, "off", "data"), (1.0, "on", "data"), (1.0, "auto", "data")],
)
def test_form_auto_follows_the_guidance_scale_and_plugin(cfg, plugin, expected):
    # Measured (docs/benchmarks.md): direction wins without guidance, only data stays stable with CFG, and the
    # plugin's jumps need the data form (auto turns the plugin on for this eps model).
    ms = fakes.model_sampling()
    auto, _, _ = sample(ms, cfg=cfg, form="auto", plugin=plugin)
    explicit, _, _ = sample(ms, cfg=cfg, form=expected, plugin=plugin)
    assert_close(auto, explicit, **TIGHT)


def test_form_auto_follows_the_tables_recorded_form():
    ms = fakes.model_sampling()
    table = default_table(prepare_sigmas(karras(ms, 10), "drop"), form="direction")
    auto, _, _ = sample(ms, cfg=7.5, params=table, form="auto")
    explicit, _, _ = sample(ms, cfg=7.5, params=table, form="direction")
    assert_close(auto, explicit, **TIGHT)
