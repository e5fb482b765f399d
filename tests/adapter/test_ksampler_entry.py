"""The opt-in KSampler dropdown entry 'epd'."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfy.k_diffusion.sampling
import comfy.samplers
import fakes
import torch
from comfyui_epd.nodes import extension
from comfyui_epd.nodes.comfy import sampling


@pytest.fixture
def clean_lists(monkeypatch):
    """Private copies of ComfyUI's sampler registries, restored after the test."""
    names = list(comfy.samplers.KSAMPLER_NAMES)
    samplers = list(comfy.samplers.SAMPLER_NAMES)
    monkeypatch.setattr(comfy.samplers, "KSAMPLER_NAMES", names)
    monkeypatch.setattr(comfy.samplers, "SAMPLER_NAMES", samplers)
    monkeypatch.setattr(comfy.samplers.KSampler, "SAMPLERS", samplers)
    monkeypatch.setattr(comfy.samplers.KSampler, "DISCARD_PENULTIMATE_SIGMA_SAMPLERS", {"dpm_2", "uni_pc"})
    monkeypatch.delattr(comfy.k_diffusion.sampling, "sample_epd", raising=False)
    return names, samplers


def test_off_by_default(clean_lists, monkeypatch):
    monkeypatch.delenv("EPD_KSAMPLER_ENTRY", raising=False)
    asyncio.run(extension.EPDExtension().on_load())
    assert "epd" not in comfy.samplers.SAMPLER_NAMES
    assert not hasattr(comfy.k_diffusion.sampling, "sample_epd")


def test_env_var_adds_the_entry_once(clean_lists, monkeypatch):
    names, samplers = clean_lists
    monkeypatch.setenv("EPD_KSAMPLER_ENTRY", "1")
    for _ in range(3):
        asyncio.run(extension.EPDExtension().on_load())
    assert names.count("epd") == 1 and samplers.count("epd") == 1
    assert comfy.samplers.KSampler.SAMPLERS is samplers and samplers[-1] == "epd", "appended, not inserted"
    assert comfy.k_diffusion.sampling.sample_epd is sampling.sample_epd_ksampler
    assert "epd" in comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS


def test_another_packs_sample_epd_is_left_alone(clean_lists, monkeypatch):
    def theirs(*args, **kwargs):
        return None

    monkeypatch.setattr(comfy.k_diffusion.sampling, "sample_epd", theirs, raising=False)
    assert sampling.register_ksampler_entry() is False
    assert comfy.k_diffusion.sampling.sample_epd is theirs and "epd" not in clean_lists[1]


def test_the_entry_samples_like_the_ksampler_node(clean_lists):
    assert sampling.register_ksampler_entry()
    ms = fakes.model_sampling()
    sampler = comfy.samplers.sampler_object("epd")
    # What KSampler does for names in DISCARD_PENULTIMATE_SIGMA_SAMPLERS: steps + 1, then drop sigma_min.
    full = comfy.samplers.calculate_sigmas(ms, "karras", 7)
    sigmas = torch.cat([full[:-2], full[-1:]])
    guider = fakes.make_guider(ms, torch.tensor([0, 1]))
    out, records = fakes.run(sampler, guider, sigmas, fakes.noise(2, dtype=torch.float32))
    assert len(records) == 6, "the tail is kept: the penultimate sigma was already dropped"
    assert torch.isfinite(out).all()


def test_the_entry_drops_a_scheduler_tail_under_sampler_custom(clean_lists):
    assert sampling.register_ksampler_entry()
    ms = fakes.model_sampling()
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", 6)  # [..., sigma_min, 0] as BasicScheduler gives
    guider = fakes.make_guider(ms, torch.tensor([0, 1]))
    _, records = fakes.run(comfy.samplers.sampler_object("epd"), guider, sigmas, fakes.noise(2, dtype=torch.float32))
    assert len(records) == 5, "sigma_min is dropped: no two-round step on the tiny last interval"
