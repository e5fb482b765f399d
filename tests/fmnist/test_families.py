"""The EPS-discrete and flow parameterisations of the Fashion-MNIST UNet (bench/fmnist/families.py, issue 14).

Each family must compute what ComfyUI's BaseModel computes with the matching model_sampling; the
ComfyUI half of that check runs when COMFYUI_PATH points at a checkout.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from bench.fmnist.checkpoint import save_module
from bench.fmnist.families import FLOW_SHIFT, eps_loss, family_info, flow_loss, flow_sigma, sd15_sigmas, wrap
from bench.fmnist.unet import FORMAT, UNet, UNetConfig, config_dict, load_denoiser

SMALL = UNetConfig(channels=(8, 16), emb_dim=16, groups=4, attn_bottleneck=False)


@pytest.fixture(scope="module", params=["eps", "flow"])
def denoiser(request):
    torch.manual_seed(0)
    return wrap(request.param, UNet(SMALL)).eval()


def test_sd15_sigmas_span_sd15s_range():
    sigmas = sd15_sigmas()
    assert len(sigmas) == 1000 and bool((sigmas[1:] > sigmas[:-1]).all())
    assert float(sigmas[0]) == pytest.approx(0.0292, abs=1e-4) and float(sigmas[-1]) == pytest.approx(14.61, abs=0.01)


def test_eps_rounds_sigma_to_the_nearest_training_timestep():
    model = wrap("eps", UNet(SMALL))
    sigmas = model.sigmas
    between = (sigmas[100] * sigmas[101]).sqrt() * 0.999  # just below the log-midpoint: rounds down
    assert model.timestep(torch.stack([sigmas[100], sigmas[101], between])).tolist() == [100.0, 101.0, 100.0]


def test_flow_range_is_comfyuis_shift_3_range():
    model = wrap("flow", UNet(SMALL))
    assert model.sigma_max == 1.0
    assert model.sigma_min == pytest.approx(float(flow_sigma(torch.tensor(0.001), FLOW_SHIFT)))


def test_the_denoiser_inverts_the_training_noising(denoiser):
    """With a network that outputs the exact eps (or velocity), D(x, sigma) returns x0 exactly."""
    x0, noise = torch.randn(3, 1, 28, 28), torch.randn(3, 1, 28, 28)
    sigma = torch.tensor([0.5, 0.2, 0.05])
    s = sigma.reshape(-1, 1, 1, 1)
    if denoiser.family == "eps":
        x, target = x0 + s * noise, noise
    else:
        x, target = (1 - s) * x0 + s * noise, noise - x0
    denoiser.raw = lambda x_in, timestep, labels: target
    try:
        assert torch.allclose(denoiser(x, sigma), x0, atol=1e-5)
    finally:
        del denoiser.raw


def test_losses_are_finite_and_backpropagate(denoiser):
    x0, labels = torch.rand(4, 1, 28, 28) * 2 - 1, torch.tensor([0, 1, 2, -1])
    loss = (eps_loss if denoiser.family == "eps" else flow_loss)(denoiser, x0, labels, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and denoiser.net.conv_in.weight.grad is not None
    denoiser.zero_grad(set_to_none=True)


def test_weight_file_round_trip_keeps_the_family(denoiser, tmp_path):
    path = tmp_path / f"{denoiser.family}.safetensors"
    save_module(path, denoiser.net, FORMAT, config_dict(SMALL), family_info(denoiser))
    loaded = load_denoiser(path)
    x, sigma = torch.randn(2, 1, 28, 28), torch.tensor([0.3, 0.3])
    assert type(loaded) is type(denoiser)
    assert torch.allclose(loaded(x, sigma), denoiser(x, sigma), atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("comfy") is None, reason="set COMFYUI_PATH to a ComfyUI checkout")
def test_comfyui_model_sampling_gives_the_same_denoised(denoiser):
    from bench.fmnist.comfy_model import fmnist_model_patcher
    from testing_nodes.toy_model import class_context

    patcher = fmnist_model_patcher(denoiser)
    x, labels = torch.randn(3, 1, 28, 28), torch.tensor([0, 4, 9])
    for s in (0.9 * denoiser.sigma_max, 0.5, 3 * denoiser.sigma_min):
        sigma = torch.full((3,), float(s))
        comfy_out = patcher.model.apply_model(x, sigma, c_crossattn=class_context(labels))
        assert torch.allclose(comfy_out, denoiser(x, sigma, labels=labels), atol=1e-5), s
