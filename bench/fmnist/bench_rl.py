"""Stage 2 (RDPO) on the real Fashion-MNIST denoiser (issue 4): does RL raise a learned reward?

    python -m bench.fmnist.bench_rl [--iterations 60] [--heldout-sets 5] [--inception 1000]

The reward is a real learned model: the project's Fashion-MNIST classifier's probability of
the requested class (a stand-in for a preference score). A "prompt" is a class label; image
i of a rollout shows class prompts[i % P], as ComfyUI tiles conditioning. The start is the
training-free default EPD table at 5 rounds (3 steps, K = 2, AFS, direction form, cfg 1).

Reports, on held-out seeds never seen in training: the mean reward of the start and of the
tuned tables over ``--heldout-sets`` disjoint seed sets (mean and spread across sets), the
classifier-feature FD and Inception FID of the same samples, the time per policy step, and
the drift from the start with the KL penalty on (default 0.01) and off (0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from epd_core.grids import epd_sigmas
from epd_core.rl import RLConfig, denoiser_rollout, rl_tune
from epd_core.solver import StepConfig, table_rows
from epd_core.table_io import save_table
from epd_core.tables import default_table

from . import data, metrics
from .classifier import DEFAULT_WEIGHTS as CLASSIFIER_WEIGHTS
from .classifier import load_classifier
from .unet import DEFAULT_WEIGHTS, load_denoiser

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
HELDOUT_SEED_BASE = 10**9  # far from the training seeds (< 2**31 drawn by the loop) and its validation seeds


def to_images(x: torch.Tensor) -> torch.Tensor:
    """[B, 1, 28, 28] in [-1, 1] -> the reward protocol's [B, 28, 28, 3] in [0, 1]."""
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).expand(-1, -1, -1, 3).float()


def from_images(images: torch.Tensor) -> torch.Tensor:
    return images[..., :1].permute(0, 3, 1, 2) * 2 - 1


def confidence_reward(classifier):
    """reward(images, texts) = the classifier's probability of the class named by each text."""
    index = {name: i for i, name in enumerate(CLASS_NAMES)}

    def reward(images: torch.Tensor, texts) -> torch.Tensor:
        with torch.no_grad():
            probs = classifier.probs(from_images(images))
        return probs[torch.arange(len(texts)), torch.tensor([index[t] for t in texts])]

    return reward


def make_rollout(denoiser, sigmas: torch.Tensor):
    def model_for(prompts: list[int]):
        labels = torch.tensor(prompts)

        def model(x: torch.Tensor, sigma: torch.Tensor, **_) -> torch.Tensor:
            return denoiser(x, sigma, labels=labels.repeat(x.shape[0] // len(labels)))

        return model

    def noise(seed: int) -> torch.Tensor:
        return torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * SIGMA_MAX

    return denoiser_rollout(model_for, noise, sigmas, StepConfig(form="direction", afs=True), to_images)


def heldout(rollout, reward, table, sets: int, per_class: int) -> tuple[list[float], torch.Tensor]:
    """Mean reward on each disjoint held-out seed set, and all the images (class i % 10)."""
    means, images = [], []
    prompts = list(range(10))
    for s in range(sets):
        seeds = [HELDOUT_SEED_BASE + s * 100_000 + i for i in range(10 * per_class)]
        batch = rollout(table_rows(table), prompts, seeds)
        means.append(float(reward(batch, [CLASS_NAMES[i % 10] for i in range(len(seeds))]).mean()))
        images.append(batch)
    return means, torch.cat(images)


def tune(start, rollout, reward, args, kl_coef: float) -> tuple:
    config = RLConfig(iterations=args.iterations, prompts_per_step=2, group_size=args.group_size, lr=args.lr,
                      kl_coef=kl_coef, concentration=args.concentration, eval_every=10,
                      eval_per_prompt=args.eval_per_prompt)  # fmt: skip
    history, stats = [], None
    for stats in rl_tune(start, rollout, reward, CLASS_NAMES, config):
        history.append({"iteration": stats.iteration, "reward": stats.mean_reward, "kl": stats.kl,
                        "val": stats.val_reward, "seconds": stats.seconds})  # fmt: skip
        if stats.val_reward is not None:
            sys.stdout.write(f"  kl_coef={kl_coef} it {stats.iteration}: rollout reward {stats.mean_reward:.4f} "
                             f"val {stats.val_reward:.4f} KL {stats.kl:.2f}\n")  # fmt: skip
            sys.stdout.flush()
    return stats.best_table, history


def quality(classifier, images: torch.Tensor, test: torch.Tensor, inception_n: int, cache: dict) -> dict:
    x = from_images(images)
    ref = cache.setdefault("clf", metrics.feature_stats(metrics.classifier_features(classifier, test)))
    out = {"classifier_fd": metrics.classifier_fd(classifier, x, ref)}
    if inception_n:
        model = cache.setdefault("inception", metrics.load_inception())
        if "inc" not in cache:
            cache["inc"] = metrics.feature_stats(metrics.inception_features(test[:inception_n], model))
        feats = metrics.feature_stats(metrics.inception_features(x[:inception_n], model))
        out["inception_fid"] = metrics.frechet_from_stats(feats, cache["inc"])
    return out


def drift(start, table) -> dict:
    return {
        "max_abs_dr": float((table.r - start.r).abs().max()),
        "max_abs_dlam": float((table.lam - start.lam).abs().max()),
    }


def train_runs(start, rollout, reward, args) -> tuple[dict, dict]:
    """The KL-on and KL-off runs from the same start and seeds: (results, tuned tables)."""
    result, tables = {}, {}
    for name, kl_coef in (("kl_on", args.kl_coef), ("kl_off", 0.0)):
        started = time.perf_counter()
        tables[name], history = tune(start, rollout, reward, args, kl_coef)
        steps = [h["seconds"] for h in history if h["val"] is None]
        result[name] = {"kl_coef": kl_coef, "train_seconds": time.perf_counter() - started,
                        "seconds_per_policy_step": statistics.mean(steps), "final_kl": history[-1]["kl"],
                        "history": history, "drift": drift(start, tables[name]),
                        "r": tables[name].r.tolist(), "lam": tables[name].lam.tolist()}  # fmt: skip
    return result, tables


def evaluate(tables: dict, rollout, reward, classifier, args, result: dict) -> None:
    """Held-out reward per seed set (paired with the start's), classifier FD and Inception FID, per table."""
    test, cache = data.load_split("test").images, {}
    for name, table in tables.items():
        means, images = heldout(rollout, reward, table, args.heldout_sets, args.per_class)
        row = result.setdefault(name, {})
        row |= {"heldout_set_means": means, "heldout_mean": statistics.mean(means),
                "heldout_spread": statistics.stdev(means)}  # fmt: skip
        if name != "start":  # paired: the same seeds as the start's sets
            gains = [a - b for a, b in zip(means, result["start"]["heldout_set_means"])]
            row |= {"gain_per_set": gains, "gain_mean": statistics.mean(gains), "gain_spread": statistics.stdev(gains)}
            save_table(table, args.out.with_name(f"{args.out.stem}_{name}.safetensors"))
        row |= quality(classifier, images, test, args.inception, cache)
        brief = {k: v for k, v in row.items() if not isinstance(v, (list, dict))}
        sys.stdout.write(f"{name}: {json.dumps(brief)}\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--kl-coef", type=float, default=0.01, help="KL penalty of the main run (the other run uses 0)")
    p.add_argument("--concentration", type=float, default=20.0)
    p.add_argument("--eval-per-prompt", type=int, default=5, help="validation images per class (best-table choice)")
    p.add_argument("--heldout-sets", type=int, default=5)
    p.add_argument("--per-class", type=int, default=20, help="held-out images per class in each set")
    p.add_argument("--inception", type=int, default=1000, help="Inception FID on this many samples (0 = skip)")
    p.add_argument("--out", type=Path, default=Path("bench/results/fmnist_rl.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    denoiser, classifier = load_denoiser(DEFAULT_WEIGHTS), load_classifier(CLASSIFIER_WEIGHTS)
    start = default_table(epd_sigmas(3, SIGMA_MIN, SIGMA_MAX), 2, form="direction", afs=True)
    rollout, reward = make_rollout(denoiser, start.sigmas), confidence_reward(classifier)
    result, tables = train_runs(start, rollout, reward, args)
    result["args"] = vars(args) | {"out": str(args.out)}
    evaluate({"start": start} | tables, rollout, reward, classifier, args, result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
