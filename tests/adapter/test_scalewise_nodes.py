"""EPD Scale-wise Schedule and Sampler through ComfyUI's real KSAMPLER / CFGGuider path (issue 16 C).

The model is exact at any resolution: i.i.d. Gaussian pixels N(MU, STD^2), whose posterior
mean is MU + STD^2 / (STD^2 + s^2) (y - MU) in ve terms (flow states y = x / (1 - t),
s = t / (1 - t)). States drawn from the true marginal give E[D] = MU, so a sampler that
re-noises with the model's own noise scaling keeps the sample mean at MU, and one that adds
sigma * n to a flow model (SamplerLCMUpscale) does not.
"""

from __future__ import annotations

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfy.model_sampling
import comfy.samplers
import fakes
import torch
from comfyui_epd.nodes.scalewise_nodes import EPDScalewiseSampler, EPDScalewiseSchedule

MU, STD = 2.0, 0.5
F64 = torch.float64


class AnySizeModel(fakes.FakeBaseModel):
    """FakeBaseModel whose exact denoiser works at every latent size; records the sizes it saw."""

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, c_crossattn: torch.Tensor, **_) -> torch.Tensor:
        self.calls.append((tuple(x.shape), t.detach().clone()))
        s = t.to(F64).reshape(-1, 1, 1, 1)
        y = x.to(F64)
        if isinstance(self.model_sampling, comfy.model_sampling.CONST):
            if bool((s >= 1).all()):
                return torch.full_like(x, MU)
            y, s = y / (1 - s), s / (1 - s)
        return (MU + STD**2 / (STD**2 + s**2) * (y - MU)).to(x.dtype)


def guider(ms):
    base = AnySizeModel(ms)
    g = comfy.samplers.CFGGuider(base.current_patcher)
    g.inner_model = base
    classes = torch.zeros(1)
    g.conds = {"positive": fakes.class_cond(classes), "negative": fakes.class_cond(classes)}
    g.set_cfg(1.0)
    return g


FAMILIES = {
    "sd-eps": (("ModelSamplingDiscrete", "EPS", {}), "custom"),
    "sd3-flow": (("ModelSamplingDiscreteFlow", "CONST", {"shift": 3.0}), "sd35_medium_4steps"),
}


def schedule(ms, preset="sd35_medium_4steps", width=128, height=128, patch=0, **custom):
    g = guider(ms)
    custom = {"custom_scales": "0.5, 0.625, 0.75, 1", "custom_sigmas": "14.6, 3, 1, 0.4, 0", **custom}
    out = EPDScalewiseSchedule.execute(g.model_patcher, preset, width, height, patch, **custom)
    return out.result, g


def sample(g, scales, sigmas, noise, latent=None, upscale="bicubic", seed=0):
    sampler = EPDScalewiseSampler.execute(scales, upscale).result[0]
    latent = torch.zeros_like(noise[:1]) if latent is None else latent
    records = []
    extra = {"model_options": {"transformer_options": {}}, "seed": seed}
    out = sampler.sample(g, sigmas, extra, lambda *a: records.append(a[0]), noise, latent, None, True)
    return out, records


@pytest.mark.parametrize("family", list(FAMILIES), ids=list(FAMILIES))
def test_keeps_the_data_mean_and_steps_through_the_scales(family):
    # 3 images, batch-1 latent (EmptyLatentImage) at the final 16x16 size; the model sees 8, 10, 12, 16.
    (schedule_args, preset) = FAMILIES[family]
    ms = fakes.model_sampling(schedule_args[0], schedule_args[1], **schedule_args[2])
    (scales, sigmas, info), g = schedule(ms, preset)
    assert info == "8x8 -> 10x10 -> 12x12 -> 16x16"
    noise = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0), dtype=F64)
    out, records = sample(g, scales, sigmas.double(), noise)
    assert out.shape == (3, 4, 16, 16)
    assert [c[0][-1] for c in g.inner_model.calls] == [8, 10, 12, 16]
    assert records == [0, 1, 2, 3], "one callback per step"
    # the mean of 3 x 4 x 256 pixels; resized pixels are correlated, 0.03 is several standard errors
    assert abs(float(out.mean()) - MU) < 0.03


def test_sampler_lcm_upscale_gets_flow_wrong_where_we_do_not():
    # ComfyUI's own SamplerLCMUpscale on the same flow model, from the first-scale latent to 16x16:
    # its sigma * n re-noise (no (1 - sigma) factor) moves the mean far from MU.
    from comfy_extras.nodes_advanced_samplers import SamplerLCMUpscale

    ms = fakes.model_sampling("ModelSamplingDiscreteFlow", "CONST", shift=3.0)
    (_, sigmas, _), g = schedule(ms)
    lcm = SamplerLCMUpscale.execute(2.0, -1, "bicubic").result[0]
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    extra = {"model_options": {"transformer_options": {}}, "seed": 0}
    theirs = lcm.sample(g, sigmas.double(), extra, None, noise, torch.zeros_like(noise), None, True)
    assert theirs.shape == (3, 4, 16, 16) and abs(float(theirs.mean()) - MU) > 0.3


def test_seeded_and_non_square():
    # SDXL's preset on a discrete eps model: DDPM timesteps 1000, 800, 600, 400 -> the model's sigmas.
    ms = fakes.model_sampling()
    (scales, sigmas, info), g = schedule(ms, "sdxl_4steps", width=192, height=128)
    assert info == "8x12 -> 10x15 -> 12x18 -> 16x24"
    expected = ms.sigma(torch.tensor([999.0, 800.0, 600.0, 400.0]))
    torch.testing.assert_close(sigmas[:-1], expected.float())
    assert float(sigmas[-1]) == 0
    noise = torch.randn(2, 4, 16, 24, generator=torch.Generator().manual_seed(1))
    a, _ = sample(g, scales, sigmas, noise, seed=3)
    b, _ = sample(g, scales, sigmas, noise, seed=3)
    c, _ = sample(g, scales, sigmas, noise, seed=4)
    assert a.shape == (2, 4, 16, 24) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_patch_rounding_from_the_model():
    ms = fakes.model_sampling("ModelSamplingDiscreteFlow", "CONST", shift=3.0)
    g = guider(ms)
    g.inner_model.diffusion_model = type("DiT", (), {"patch_size": 2})()
    out = EPDScalewiseSchedule.execute(g.model_patcher, "sd35_medium_4steps", 200, 136, 0, "", "").result
    # latent 17 x 25: 8.5 -> 10, 10.6 -> 12, 12.75 -> 14, 17; 12.5 -> 14, 15.6 -> 16, 18.75 -> 20, 25
    assert out[0].sizes == ((10, 14), (12, 16), (14, 20), (17, 25)) and out[0].patch == 2


def test_errors_name_the_node_and_the_fix():
    eps = fakes.model_sampling()
    with pytest.raises(ValueError, match=r"EPD Scale-wise Schedule: preset sd35_medium_6steps is for a flow model"):
        schedule(eps, "sd35_medium_6steps")
    with pytest.raises(ValueError, match=r"EPD Scale-wise Schedule: 4 scales need 5 sigmas .* got 3"):
        schedule(eps, "custom", custom_sigmas="10, 1, 0")
    with pytest.raises(ValueError, match=r"EPD Scale-wise Schedule: scales must not shrink"):
        schedule(eps, "custom", custom_scales="0.75, 0.5, 1", custom_sigmas="10, 1, 0")
    with pytest.raises(ValueError, match=r"custom_sigmas must be numbers in \[0, 14.6"):
        schedule(eps, "custom", custom_sigmas="100, 3, 1, 0.4, 0")
    (scales, sigmas, _), g = schedule(eps, "custom")
    noise = torch.randn(1, 4, 12, 12)
    with pytest.raises(ValueError, match=r"EPD Scale-wise Sampler: the latent is 12x12 but the schedule ends at 16x16"):
        sample(g, scales, sigmas, noise)
    sampler = EPDScalewiseSampler.execute(scales).result[0]
    noise, mask = torch.randn(1, 4, 16, 16), torch.ones(1, 1, 16, 16)
    with pytest.raises(ValueError, match=r"EPD Scale-wise Sampler: inpainting masks are not supported"):
        sampler.sample(g, sigmas, {"model_options": {}, "seed": 0}, None, noise, torch.zeros_like(noise), mask, True)
