"""Quality of the Fashion-MNIST denoiser under a reference sampler: ``python -m bench.fmnist.evaluate``.

Draws ``--n`` samples (class i % 10) with EDM's deterministic Heun sampler on the Karras grid, then
reports the classifier-feature Fréchet distance to the 10,000 test images, and the same distance for
real images (train vs test, and a test subset of the same size) as the floor. With ``--inception M``
it also reports Inception FID of the first M samples against the first M test images.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from . import data, metrics
from .classifier import DEFAULT_WEIGHTS as CLASSIFIER_WEIGHTS
from .classifier import load_classifier
from .sample import generate, save_grid
from .unet import DEFAULT_WEIGHTS, load_denoiser

log = logging.getLogger(__name__)


def real_floors(classifier, ref: metrics.FeatureStats, n: int) -> dict[str, float]:
    """Classifier FD of real images to the test set: the 60k train split, and a test subset of size n."""
    train = data.load_split("train").images
    test = data.load_split("test").images
    return {
        "fd_train_vs_test": metrics.classifier_fd(classifier, train, ref),
        f"fd_test_first{n}_vs_test": metrics.classifier_fd(classifier, test[:n], ref),
    }


def inception_fid(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """Inception FID between two image sets [N, 1, 28, 28] in [-1, 1]."""
    model = metrics.load_inception()
    feats_a = metrics.inception_features(samples, model)
    feats_b = metrics.inception_features(reference, model)
    return metrics.frechet_distance(feats_a, feats_b)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="denoiser .safetensors file")
    p.add_argument("--n", type=int, default=2000, help="number of samples")
    p.add_argument("--steps", type=int, default=50, help="Heun steps (2 * steps - 1 model evaluations)")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--inception", type=int, default=0, help="Inception FID on this many samples (0 = skip)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=Path("bench/out/fmnist_eval"), help="folder for JSON, grid, samples")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    classifier = load_classifier(CLASSIFIER_WEIGHTS)
    test = data.load_split("test")
    ref = metrics.feature_stats(metrics.classifier_features(classifier, test.images))
    start = time.monotonic()
    samples, labels = generate(load_denoiser(args.weights), args.n, steps=args.steps, cfg=args.cfg, seed=args.seed)
    result = {"n": args.n, "steps": args.steps, "cfg": args.cfg, "seed": args.seed}
    result["sample_seconds"] = round(time.monotonic() - start, 1)
    result["fd_classifier"] = metrics.classifier_fd(classifier, samples, ref)
    result["label_accuracy"] = float((classifier.probs(samples).argmax(-1) == labels).float().mean())
    result |= real_floors(classifier, ref, args.n)
    if args.inception:
        start = time.monotonic()
        result["fid_inception"] = inception_fid(samples[: args.inception], test.images[: args.inception])
        result["inception_n"], result["inception_seconds"] = args.inception, round(time.monotonic() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    save_grid(args.out / f"heun{args.steps}_grid.png", samples[:100])
    np.save(args.out / f"heun{args.steps}_samples.npy", samples.numpy())
    (args.out / f"heun{args.steps}.json").write_text(json.dumps(result, indent=2))
    log.info("%s", json.dumps(result))


if __name__ == "__main__":
    main()
