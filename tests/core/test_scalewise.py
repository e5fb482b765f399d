"""Scale-wise sampling (SwD, issue 16 C): the sampler, its presets and sizes, the Gaussian-field test bed.

float64 throughout where a number is compared; every expected value is derived in a comment.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from epd_core.mmd import mmd2, patch_mmd2, patches
from epd_core.scalewise import (
    PRESETS,
    flow_noise_scaling,
    parse_scales,
    preset_factors,
    resize,
    sample_scalewise,
    scale_sizes,
    start_state,
    ve_noise_scaling,
)
from epd_core.scalewise.fields import PowerLawField, radial_spectrum, spectrum_error

F64 = torch.float64
MU, STD = 2.0, 0.5  # i.i.d. Gaussian pixels: an exact denoiser at any resolution


def gaussian_denoiser(kind: str):
    """E[x0 | x] for x0 ~ N(MU, STD^2) per pixel; flow states are mapped to ve by y = x / (1 - t)."""

    def ve(x, sigma, **_):
        s2 = sigma.reshape(-1, 1, 1, 1) ** 2
        return MU + STD**2 / (STD**2 + s2) * (x - MU)

    def flow(x, t, **_):
        t = t.reshape(-1, 1, 1, 1)
        return ve(x / (1 - t), t / (1 - t)) if bool((t < 1).all()) else torch.full_like(x, MU)

    return ve if kind == "ve" else flow


class Recorder:
    """A model that returns a constant x0 and records what it was fed."""

    def __init__(self, value: float = 1.5) -> None:
        self.value, self.inputs = value, []

    def __call__(self, x, sigma, **_):
        self.inputs.append((x.clone(), sigma.clone()))
        return torch.full_like(x, self.value)


SCALINGS = {"ve": ve_noise_scaling, "flow": flow_noise_scaling}


@pytest.mark.parametrize("kind", ["ve", "flow"])
def test_renoises_with_the_models_own_noise_scaling(kind):
    # Step 0 predicts x0 = 1.5 everywhere at 2x2; bicubic keeps a constant constant, so the state fed to
    # step 1 at 4x4 is exactly noise_scaling(0.5, n, 1.5) with n the generator's first draw:
    # ve: 1.5 + 0.5 n; flow: 0.5 n + 0.5 * 1.5.
    model, x = Recorder(), torch.randn(2, 3, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    sigmas = torch.tensor([0.9, 0.5, 0.0], dtype=F64)
    out = sample_scalewise(model, x, sigmas, scales=[(2, 2), (4, 4)], noise_scaling=SCALINGS[kind],
                           generator=torch.Generator().manual_seed(7))  # fmt: skip
    n = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(7), dtype=F64)
    expected = 1.5 + 0.5 * n if kind == "ve" else 0.5 * n + 0.5 * 1.5
    assert model.inputs[0][0].shape == (2, 3, 2, 2) and model.inputs[1][0].shape == (2, 3, 4, 4)
    assert_close(model.inputs[1][0], expected, atol=1e-12, rtol=0)
    assert_close(out, torch.full_like(x, 1.5), atol=0, rtol=0)
    assert [float(s[0]) for _, s in model.inputs] == [0.9, 0.5]


@pytest.mark.parametrize("kind", ["ve", "flow"])
def test_flow_and_eps_keep_the_data_mean(kind):
    # With the exact denoiser and states drawn from the true marginal, E[D(x_t)] = E[x0] = MU at every
    # step. Right re-noising keeps the mean at MU (within 0.03 over 4 x 32 x 32 pixels; resized pixels are
    # correlated, so the std of the mean is a few times 0.5 / 64). SamplerLCMUpscale's x0 + t n on a flow model feeds mean MU instead of
    # (1 - t) MU, and the denoiser then reads y = x / (1 - t) far above MU: the mean drifts by > 0.3.
    sigmas = torch.tensor([1.0, 0.8959, 0.7371, 0.6022, 0.0], dtype=F64)
    if kind == "ve":
        sigmas = torch.tensor([14.6, 3.0, 1.0, 0.4, 0.0], dtype=F64)
    scales = [(16, 16), (20, 20), (24, 24), (32, 32)]
    n = torch.randn(4, 1, 32, 32, dtype=F64, generator=torch.Generator().manual_seed(0))
    x = SCALINGS[kind](sigmas[0], n, torch.full_like(n, MU))  # a draw of the true marginal at sigmas[0]
    model = gaussian_denoiser(kind)
    out = sample_scalewise(model, x, sigmas, scales=scales, noise_scaling=SCALINGS[kind])
    assert abs(float(out.mean()) - MU) < 0.03
    if kind == "flow":
        wrong = sample_scalewise(model, x, sigmas, scales=scales, noise_scaling=ve_noise_scaling)
        assert abs(float(wrong.mean()) - MU) > 0.3


def test_seeded_noise_reproduces():
    x = torch.randn(3, 4, 8, 12, dtype=F64, generator=torch.Generator().manual_seed(0))
    sigmas, scales = torch.tensor([1.0, 0.7, 0.4, 0.0], dtype=F64), [(4, 6), (6, 8), (8, 12)]
    model = gaussian_denoiser("flow")

    def run(**kw):
        return sample_scalewise(model, x, sigmas, scales=scales, noise_scaling=flow_noise_scaling, **kw)

    assert torch.equal(run(extra_args={"seed": 5}), run(extra_args={"seed": 5}))
    assert not torch.equal(run(extra_args={"seed": 5}), run(extra_args={"seed": 6}))
    assert torch.equal(run(extra_args={"seed": 5}), run(generator=torch.Generator().manual_seed(5)))
    out = run()
    assert out.shape == (3, 4, 8, 12)
    assert not torch.equal(out[0], out[1]), "each image of a batch gets its own noise"


def test_batch_one_start_at_either_end_and_inputs_kept():
    # A batch-1 latent at the final size or at the first scale: both start the same schedule.
    model = gaussian_denoiser("ve")
    sigmas, scales = torch.tensor([10.0, 1.0, 0.0]), [(3, 5), (6, 10)]
    for size in ((6, 10), (3, 5)):
        x = torch.randn(1, 4, *size, generator=torch.Generator().manual_seed(0)) * 10
        keep = x.clone(), sigmas.clone()
        out = sample_scalewise(model, x, sigmas, scales=scales)
        assert out.shape == (1, 4, 6, 10) and out.dtype == torch.float32
        assert torch.equal(x, keep[0]) and torch.equal(sigmas, keep[1])


def test_start_state_keeps_noise_statistics_and_area_averages_the_latent():
    # nearest-exact picks distinct pixels of i.i.d. noise: still unit variance (4096 values, std of the
    # variance estimate ~0.02); area averaging 2x2 blocks would give 1/4.
    n = torch.randn(4, 4, 64, 64, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert abs(float(start_state(n, (32, 32)).var()) - 1) < 0.06
    assert abs(float(resize(n, (32, 32), "area").var()) - 0.25) < 0.02
    # with the clean latent given: exactly area(latent) + weight * ... the noise part subsampled
    latent = torch.linspace(0, 1, 64, dtype=F64).expand(4, 4, 64, 64)
    x = flow_noise_scaling(torch.tensor(0.6, dtype=F64), n, latent)
    got = start_state(x, (32, 32), latent, weight=0.4)
    want = 0.6 * resize(n, (32, 32), "nearest-exact") + 0.4 * resize(latent, (32, 32), "area")
    assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("scales", "sigmas", "shape", "match"),
    [
        ([(8, 8), (4, 4)], [1.0, 0.5, 0.0], (1, 4, 4, 4), r"scales must not shrink: step 1 is 8x8 but step 2 is 4x4"),
        ([(4, 4), (8, 8)], [1.0, 0.0], (1, 4, 8, 8), r"2 scales need 3 sigmas .* got 2"),
        ([(4, 4), (8, 8)], [1.0, 0.5, 0.0], (1, 4, 12, 12), r"the latent is 12x12 but the schedule ends at 8x8"),
        ([(4, 4), (8, 8)], [0.5, 1.0, 0.0], (1, 4, 8, 8), r"sigmas must decrease"),
        ([(4, 4), (8, 8)], [1.0, 0.5, 0.0], (1, 4, 2, 8, 8), r"needs an image latent \[B, C, H, W\]"),
        ([], [1.0], (1, 4, 8, 8), r"the scale list is empty"),
        ([(0, 4), (8, 8)], [1.0, 0.5, 0.0], (1, 4, 8, 8), r"positive whole latent sizes"),
    ],
)
def test_bad_schedules_are_named(scales, sigmas, shape, match):
    with pytest.raises(ValueError, match=match):
        sample_scalewise(Recorder(), torch.zeros(shape), torch.tensor(sigmas), scales=scales)


def test_bad_upscale_mode_lists_the_choices():
    with pytest.raises(ValueError, match=r"upscale='bislerp' is not one of \('bicubic'"):
        sample_scalewise(Recorder(), torch.zeros(1, 4, 8, 8), torch.tensor([1.0, 0.0]), scales=[(8, 8)],
                         upscale="bislerp")  # fmt: skip


def test_non_square_sizes_round_up_to_the_patch():
    # 1024 x 768 px -> latent 96 x 128 (h x w); SwD's 4-step factors 64/128 .. 128/128.
    assert scale_sizes([0.5, 0.625, 0.75, 1], 96, 128, 2) == [(48, 64), (60, 80), (72, 96), (96, 128)]
    # odd height 75, patch 2: 37.5 -> 38, 46.875 -> 48, 56.25 -> 58, the last is the latent itself (75)
    assert scale_sizes([0.5, 0.625, 0.75, 1], 75, 100, 2) == [(38, 50), (48, 64), (58, 76), (75, 100)]
    # tiny sides never go below one patch, and rounding never makes a later scale smaller
    assert scale_sizes([0.1, 0.2, 1], 5, 9, 2) == [(2, 2), (2, 2), (5, 9)]
    with pytest.raises(ValueError, match=r"the last scale must be the final size"):
        scale_sizes([0.5, 0.75], 64, 64)
    with pytest.raises(ValueError, match=r"must not shrink"):
        scale_sizes([0.75, 0.5, 1], 64, 64)


def test_presets_and_custom_scales():
    for name, p in PRESETS.items():
        assert len(p.sigmas) == len(p.scales) + 1 and p.sigmas[-1] == 0, name
        assert list(p.scales) == sorted(p.scales) and p.scales[-1] == 128, name
    assert preset_factors(PRESETS["sd35_medium_6steps"]) == [0.25, 0.375, 0.5, 0.625, 0.75, 1.0]
    assert parse_scales("32, 64 128") == [0.25, 0.5, 1.0] == parse_scales("0.25,0.5,1")
    with pytest.raises(ValueError, match=r"'x' is not a number"):
        parse_scales("0.5, x, 1")


def test_field_denoiser_and_spectrum():
    field = PowerLawField(alpha=2.0)
    gen = torch.Generator().manual_seed(0)
    x0 = field.sample(512, 1, 32, 32, gen)
    assert spectrum_error(x0, field) < 0.03  # exact draws: only sampling noise (512 images)
    assert_close(field.denoise(x0, torch.zeros(512, dtype=F64)), x0, atol=1e-12, rtol=0)
    # at huge sigma the posterior mean is the prior mean, 0
    assert float(field.denoise(x0, torch.full((512,), 1e6, dtype=F64)).abs().max()) < 1e-6
    # flow at t: the same filter on x / (1 - t) with sigma = t / (1 - t)
    t, n = torch.full((512,), 0.6, dtype=F64), torch.randn(x0.shape, generator=gen, dtype=F64)
    xt = 0.4 * x0 + 0.6 * n
    assert_close(field.denoise_flow(xt, t), field.denoise(xt / 0.4, t / 0.4), atol=1e-12, rtol=0)
    assert torch.equal(field.denoise_flow(xt, torch.ones(512, dtype=F64)), torch.zeros_like(xt))
    # a posterior draw at tiny sigma is the data itself; at t = 1 (flow) an exact prior draw
    tiny = field.posterior_sample(x0, torch.full((512,), 1e-9, dtype=F64), gen)
    assert_close(tiny, x0, atol=1e-6, rtol=0)
    prior = field.denoise_flow(torch.randn(x0.shape, generator=gen, dtype=F64), torch.ones(512, dtype=F64), gen)
    assert spectrum_error(prior, field) < 0.03
    # from a real noisy draw, posterior draws are distributed like the data again
    noisy = x0 + 3.0 * torch.randn(x0.shape, generator=gen, dtype=F64)
    assert spectrum_error(field.posterior_sample(noisy, torch.full((512,), 3.0, dtype=F64), gen), field) < 0.03
    # a field at 16 x 16 is the ideal low-pass subsample of one at 32 x 32: the same power per frequency
    # (S = h * w * s(nu), so the orthonormal coefficients of the 16 x 16 field carry 1/4 of the power)
    small = field.sample(512, 1, 16, 16, gen)
    assert_close(4 * radial_spectrum(small)[:4], radial_spectrum(x0)[:4], rtol=0.1, atol=0)


def test_patch_mmd():
    field, gen = PowerLawField(), torch.Generator().manual_seed(0)
    a, b = field.sample(64, 1, 16, 16, gen), field.sample(64, 1, 16, 16, gen)
    blurred = field.denoise(b, torch.full((64,), 5.0, dtype=F64))  # pixel variance ~14: sigma 5 blurs visibly
    same, off = float(patch_mmd2(a, b)), float(patch_mmd2(a, blurred))
    assert abs(same) < 0.01 < 0.05 < off  # measured 0.003 and 0.10
    assert patches(a, 4).shape == (64 * 16, 16)
    # linear kernel: |mean a - mean b|^2; [[0, 0], [2, 2]] vs [[1, 1], [1, 1]] -> |(1, 1) - (1, 1)|^2 = 0
    u, v = torch.tensor([[0.0, 0.0], [2.0, 2.0]]), torch.ones(2, 2)
    assert float(mmd2(u, v, "linear")) == 0.0
    with pytest.raises(ValueError, match=r"kernel='gauss' is not one of"):
        mmd2(u, v, "gauss")
