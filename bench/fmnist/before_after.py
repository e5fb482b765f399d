"""The README's before/after picture: built-in samplers and EPD at equal model rounds, next to the converged image.

One trained Fashion-MNIST UNet (``--family``, EDM by default) in a real ComfyUI MODEL, as in
bench_families.py (``FamilySetting``): every row goes CFGGuider -> KSAMPLER -> BaseModel ->
model_sampling from the same noise, one sample per class (class b for column b). Rows:

- dpmpp_2m on the karras grid at R steps (R model rounds): what a ComfyUI user runs by default;
- the best built-in at R rounds, chosen after the fact here among bench_families' 8 samplers x 6
  schedulers (the strongest possible peer, as in docs/benchmarks.md);
- EPD Sigmas + EPD Sampler at their node defaults, called through the nodes' own ``execute``, with
  only EPD Sigmas' ``steps`` set so that the run takes R rounds (counted, not assumed);
- the converged reference (EPD K = 1 on ``--ref-steps`` log-spaced sigmas, as in the benchmark).

Each row is labelled with its counted rounds, its model evaluations (EPD evaluates its K points in
one batched round, so it spends more evaluations per round) and its RMS error to the reference
(pixels in [-1, 1], RMS over pixels, averaged over the 10 samples: bench_families.rms). Which row
is closer is what those numbers say; the script prints them too.

    COMFYUI_PATH=/path/to/ComfyUI python -m bench.fmnist.before_after --family edm --out docs/images/before_after.png
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.exact_runs import Counter
from bench.fmnist.bench_families import BUILTINS, SCHEDULERS, FamilySetting, cell, comfy_or_exit, load_pack, rms

log = logging.getLogger(__name__)
CLASSES = 10
FAMILY_NAMES = {"edm": "EDM", "eps": "EPS (SD1.5 schedule)", "flow": "flow, shift 3 (SD3)"}
MARGIN, TILE_GAP, ROW_GAP, FONT_SIZE = 8, 2, 6, 15
BACKGROUND, INK = (255, 255, 255), (20, 20, 20)


def epd_node_defaults(setting: FamilySetting, rounds: int) -> tuple[torch.Tensor, Counter, int]:
    """EPD Sigmas + EPD Sampler at their defaults, EPD Sigmas' steps chosen to spend ``rounds``; (x, counter, steps)."""
    load_pack()
    from comfyui_epd.nodes.sampler_nodes import EPDSampler, EPDSigmas

    sampler = EPDSampler.execute()[0]
    for steps in range(1, rounds + 2):  # the tail and the analytical first step decide the rounds per step
        sigmas = EPDSigmas.execute(model=setting.patcher, steps=steps)[0]
        x, counter = setting.sample(sampler.sampler_function, dict(sampler.extra_options), sigmas)
        if counter.rounds >= rounds:
            break
    if counter.rounds != rounds:
        raise SystemExit(f"EPD Sigmas gives no grid of exactly {rounds} rounds at the node defaults")
    return x, counter, steps


def best_builtin(setting: FamilySetting, ref: torch.Tensor, rounds: int) -> tuple[str, str]:
    """The (sampler, scheduler) of BUILTINS x SCHEDULERS closest to ``ref`` at exactly ``rounds`` rounds."""
    errors = {}
    for name, scheduler in itertools.product(BUILTINS, SCHEDULERS):
        result = cell(setting.builtin, (name, scheduler, rounds), ref)
        if result["rounds"] == rounds and math.isfinite(result["error"]):
            errors[name, scheduler] = result["error"]
    return min(errors, key=errors.get)


def run_rows(setting: FamilySetting, rounds: int, ref_steps: int) -> list[tuple[str, torch.Tensor]]:
    """(label, samples [10, 784]) per row, the reference last; labels carry rounds and RMS error."""
    ref = setting.reference(ref_steps)
    floor = rms(setting.reference(ref_steps // 2), ref)
    runs = [(f"dpmpp_2m / karras, {rounds} steps", setting.builtin("dpmpp_2m", "karras", rounds))]
    best = best_builtin(setting, ref, rounds)
    if best != ("dpmpp_2m", "karras"):
        label = f"{best[0]} / {best[1]}, {rounds} steps\n(the best of {len(BUILTINS) * len(SCHEDULERS)} built-in runs)"
        runs.append((label, setting.builtin(*best, rounds)))
    x, counter, steps = epd_node_defaults(setting, rounds)
    runs.append((f"EPD, node defaults, steps {steps}", (x, counter)))
    rows = []
    for label, (x, counter) in runs:
        error = rms(x, ref)
        log.info("%s: %d rounds, %.1f evaluations, RMS %.4f", label, counter.rounds, counter.evals, error)
        cost = f"{counter.rounds} rounds ({counter.evals:g} evaluations)"
        rows.append((f"{label}\n{cost}, RMS to reference {error:.3f}", x))
    rows.append((f"converged reference\n{ref_steps} steps (its own floor {floor:.4f})", ref))
    return rows


def tiles(x: torch.Tensor, scale: int) -> np.ndarray:
    """[10, 784] in [-1, 1] -> one uint8 strip [28 s, 10 (28 s + gap)] of upscaled tiles."""
    side = 28 * scale
    strip = np.full((side, CLASSES * (side + TILE_GAP)), 255, dtype=np.uint8)
    images = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).reshape(-1, 28, 28).numpy()
    for b, image in enumerate(images[:CLASSES]):
        big = np.kron(image, np.ones((scale, scale), dtype=np.uint8))
        strip[:, b * (side + TILE_GAP) : b * (side + TILE_GAP) + side] = big
    return strip


def compose(rows: list[tuple[str, torch.Tensor]], title: str, scale: int) -> Any:
    """One labelled row of tiles per run, under a title line."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=FONT_SIZE)  # Pillow's bundled font: the same picture everywhere
    strips = [tiles(x, scale) for _, x in rows]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [measure.multiline_textbbox((0, 0), label, font=font, spacing=4) for label, _ in rows]
    label_w = 2 * MARGIN + max(box[2] for box in boxes)
    head = 2 * FONT_SIZE
    width = label_w + strips[0].shape[1]
    height = head + sum(s.shape[0] + ROW_GAP for s in strips)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, 6), title, fill=INK, font=font)
    top = head
    for (label, _), strip, box in zip(rows, strips, boxes):
        canvas.paste(Image.fromarray(strip).convert("RGB"), (label_w, top))
        middle = top + (strip.shape[0] - box[3]) // 2  # the label centred on its row
        draw.multiline_text((MARGIN, middle), label, fill=INK, font=font, spacing=4)
        top += strip.shape[0] + ROW_GAP
    return canvas


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=sorted(FAMILY_NAMES), default="edm")
    p.add_argument("--cfg", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=5, help="sequential model rounds of every fast row")
    p.add_argument("--ref-steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=3, help="pixels per Fashion-MNIST pixel")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("docs/images/before_after.png"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    comfy = comfy_or_exit(args.threads)
    setting = FamilySetting(args.family, args.cfg, CLASSES, args.seed, comfy)
    rows = run_rows(setting, args.rounds, args.ref_steps)
    title = (
        f"Fashion-MNIST {FAMILY_NAMES[args.family]} UNet through ComfyUI, cfg {args.cfg:g}, seed {args.seed}: "
        f"same noise, {args.rounds} model rounds per fast row"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    compose(rows, title, args.scale).save(args.out, optimize=True)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
