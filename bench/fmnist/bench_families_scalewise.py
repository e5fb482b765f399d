"""Issue 16 C: EPD Scale-wise Sampler against ComfyUI's best built-in per model family, through ComfyUI's real stack.

Same setting as bench_families.py (imported from it, read-only): a trained Fashion-MNIST UNet of one
family in a real ComfyUI MODEL, CFGGuider -> KSAMPLER -> model_sampling, the same noise and classes,
error = pixel RMS to a converged reference from the same noise (EPD K = 1 on ``--ref-steps`` sigmas;
batch 20, seed 0, 150 steps reproduce the stored rows of bench/results/families/<family>.json, which
the run checks by re-running their best built-in at R = 3 and 5).

The scale-wise rows run the pack's KSAMPLER function (nodes/comfy/scalewise.py) with one model call
per step, so R rounds = R steps. Scale lists are factors of the 28x28 final size (SCALE_LISTS, SwD's
4- and 6-step presets among them), rounded up to multiples of 4 latent pixels: the UNet halves the
image twice, and EPD Scale-wise Schedule's ``patch`` input rounds the same way. Each list runs on every
scheduler of SCHEDULERS and, at 4 and 6 steps, on SwD's own sigmas (flow t; t / (1 - t) on EDM / EPS,
t = 1 -> sigma_max); the best grid is kept after the fact, as for the built-ins. A "full-res" row runs
the same sampler with every scale at 28x28 (an LCM-style re-noising sampler): it separates what the
re-noising costs from what the resizing costs. Compute proxy ("cost"): the model's pixel count summed
over the steps, in full-resolution steps. Built-ins at R = 4 and 6 (not stored) are scanned here over
BUILTINS x SCHEDULERS. A second, distribution-level measure: the squared patch MMD (4x4 patches, RBF,
unbiased, so it can dip below 0) between each row's 20 samples and the 20 reference samples.

These UNets were trained at 28x28 only and are not SwD-distilled, so scale-wise sampling is expected
to lose here; the numbers say by how much.

    COMFYUI_PATH=/opt/comfy/ComfyUI python -m bench.fmnist.bench_families_scalewise --family edm --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from bench.fmnist.bench_families import (
    BUILTINS,
    SCHEDULERS,
    FamilySetting,
    cell,
    comfy_or_exit,
    load_pack,
    write_results,
)
from epd_core.mmd import patch_mmd2
from epd_core.scalewise import PRESETS, ScaleSchedule, scale_sizes

log = logging.getLogger(__name__)
SIDE = 28  # the Fashion-MNIST latent (= image) side
PATCH = 4  # the UNet halves the image twice, so every side must be a multiple of 4
SCALE_LISTS = {
    3: (0.5, 0.75, 1.0),
    4: (0.5, 0.625, 0.75, 1.0),  # SwD's 4-step preset (64, 80, 96, 128 of 128)
    5: (0.375, 0.5, 0.625, 0.75, 1.0),
    6: (0.25, 0.375, 0.5, 0.625, 0.75, 1.0),  # SwD's 6-step preset (32, 48, ..., 128 of 128)
}
SWD_SIGMAS = {4: PRESETS["sd35_medium_4steps"].sigmas, 6: PRESETS["sd35_medium_6steps"].sigmas}
STORED_ROUNDS = (3, 5)  # budgets at which bench/results/families/<family>.json holds the best built-in
EQUAL_COST_ROUNDS = 2  # every scale list here costs 2.06-2.84 full-res steps: built-ins at 2 rounds cost 2


def sizes_of(factors: tuple[float, ...]) -> list[tuple[int, int]]:
    return scale_sizes(factors, SIDE, SIDE, PATCH)


def cost_of(sizes: list[tuple[int, int]]) -> float:
    """Pixel-count compute proxy, in full-resolution steps."""
    return sum(h * w for h, w in sizes) / (SIDE * SIDE)


def swd_sigmas(model_sampling: Any, steps: int) -> torch.Tensor:
    """SwD's published flow-t sigmas for ``steps``, in this model's sigma space."""
    t = torch.tensor(SWD_SIGMAS[steps], dtype=torch.float64)
    if float(model_sampling.sigma_max) <= 1.0 + 1e-6:  # a flow model: sigma is t
        return t
    ve = t / (1 - t).clamp_min(1e-12)
    return torch.where(t >= 1, torch.full_like(t, float(model_sampling.sigma_max)), ve)


class ScalewiseSetting:
    """Runs the pack's scale-wise sampler function on a FamilySetting."""

    def __init__(self, setting: FamilySetting) -> None:
        load_pack()
        from comfyui_epd.nodes.comfy import scalewise

        self.setting, self.fn = setting, scalewise.sample_scalewise_comfy

    def grids(self, steps: int) -> list[str]:
        return list(SCHEDULERS) + (["swd"] if steps in SWD_SIGMAS else [])

    def sigmas(self, grid: str, steps: int) -> torch.Tensor:
        ms = self.setting.model_sampling
        if grid == "swd":
            return swd_sigmas(ms, steps)
        return self.setting.comfy.samplers.calculate_sigmas(ms, grid, steps).double()

    def run(self, sizes: list[tuple[int, int]], grid: str, upscale: str) -> tuple[torch.Tensor, Any]:
        schedule = ScaleSchedule(tuple(sizes), PATCH, "bench")
        options = {"schedule": schedule, "upscale": upscale}
        return self.setting.sample(self.fn, options, self.sigmas(grid, len(sizes)))


def images(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, 1, SIDE, SIDE)


def measured(run: Any, run_args: tuple, ref: torch.Tensor) -> dict[str, Any]:
    """bench_families.cell, plus the patch MMD of the run's samples to the reference samples."""
    samples: list[torch.Tensor] = []

    def keep(*a: Any) -> Any:
        x, counter = run(*a)
        samples.append(x)
        return x, counter

    out = cell(keep, run_args, ref)
    if samples and torch.isfinite(samples[0]).all():
        out["patch_mmd2"] = float(patch_mmd2(images(samples[0]), images(ref)))
    return out


def scalewise_rows(sw: ScalewiseSetting, ref: torch.Tensor, upscales: list[str]) -> dict[str, dict[str, Any]]:
    """Every scale list and its full-res control on every grid, keyed 'name / grid' -> {R: cell}."""
    rows: dict[str, dict[str, Any]] = {}
    for steps, factors in SCALE_LISTS.items():
        sizes = sizes_of(factors)
        lists = {f"scale-wise {'-'.join(str(h) for h, _ in sizes)} {u}": (sizes, u) for u in upscales}
        lists[f"full-res x{steps}"] = ([(SIDE, SIDE)] * steps, upscales[0])
        for (name, (sz, upscale)), grid in itertools.product(lists.items(), sw.grids(steps)):
            rows[f"{name} / {grid}"] = {str(steps): measured(sw.run, (sz, grid, upscale), ref) | {"cost": cost_of(sz)}}
        log.info("%d steps done", steps)
    return rows


def builtin_rows(setting: FamilySetting, ref: torch.Tensor, pairs: list[tuple[str, str]], r: int) -> dict:
    return {f"{b} / {s}": {str(r): measured(setting.builtin, (b, s, r), ref) | {"cost": float(r)}} for b, s in pairs}


def stored_reference(setting: FamilySetting, steps: int) -> torch.Tensor:
    """FamilySetting.reference as the stored rows ran it: EPD K = 1 without the plugin.

    Since EPD Sampler's plugin became auto (on for EDM / EPS models, 428c240), reference() runs the
    plugin there, which moves the converged reference by less than its floor but not bit for bit.
    """
    hi, lo = float(setting.model_sampling.sigma_max), float(setting.model_sampling.sigma_min)
    grid = torch.exp(torch.linspace(math.log(hi), math.log(lo), steps, dtype=torch.float64))
    options = {"num_points": 1, "form": "data", "tail": "keep", "afs": "off", "parallel": "batched", "plugin": "off"}
    return setting.sample(setting.pack.sample_epd_comfy, options, torch.cat([grid, grid.new_zeros(1)]))[0]


def merge(rows: dict[str, dict[str, Any]], more: dict[str, dict[str, Any]]) -> None:
    for name, cells in more.items():
        rows.setdefault(name, {}).update(cells)


def stored_best(family: str, out: Path, r: int) -> tuple[str, float]:
    """The best built-in of the stored family rows at R = r, cfg 1: (name, error)."""
    rows = json.loads((out / f"{family}.json").read_text())["cfgs"]["1.0"]["rows"]
    ok = {n: v[str(r)]["error"] for n, v in rows.items()
          if not n.startswith("EPD") and v.get(str(r), {}).get("rounds") == r}  # fmt: skip
    name = min(ok, key=ok.get)
    return name, ok[name]


def best(rows: dict[str, dict[str, Any]], r: int, prefix: str = "") -> tuple[str, dict[str, Any]] | None:
    ok = [(n, v[str(r)]) for n, v in rows.items()
          if n.startswith(prefix) and str(r) in v and v[str(r)]["rounds"] == r and math.isfinite(v[str(r)]["error"])]  # fmt: skip
    return min(ok, key=lambda item: item[1]["error"]) if ok else None


def run_family(args: argparse.Namespace, comfy: Any) -> dict[str, Any]:
    start = time.monotonic()
    setting = FamilySetting(args.family, 1.0, args.batch, args.seed, comfy)
    ref = stored_reference(setting, args.ref_steps)
    builtins: dict[str, dict[str, Any]] = {}
    stored = {}
    for r in STORED_ROUNDS:
        name, error = stored_best(args.family, args.out, r)
        stored[str(r)] = {"row": name, "error": error}
        merge(builtins, builtin_rows(setting, ref, [tuple(name.split(" / "))], r))
        log.info("R=%d stored best %s %.6f, rerun %.6f", r, name, error, builtins[name][str(r)]["error"])
    for r in sorted({EQUAL_COST_ROUNDS, *SCALE_LISTS} - set(STORED_ROUNDS)):
        merge(builtins, builtin_rows(setting, ref, list(itertools.product(BUILTINS, SCHEDULERS)), r))
    log.info("built-ins done")
    rows = scalewise_rows(ScalewiseSetting(setting), ref, args.upscales)
    return {"family": args.family, "batch": args.batch, "seed": args.seed, "ref_steps": args.ref_steps, "cfg": 1.0,
            "patch": PATCH, "stored_best": stored, "builtins": builtins, "scalewise": rows,
            "seconds": round(time.monotonic() - start)}  # fmt: skip


def summary(results: dict[str, Any]) -> str:
    """Markdown: at each R the best built-in, the best scale-wise row, the full-res control, the built-in at cost 2."""
    cheap = best(results["builtins"], EQUAL_COST_ROUNDS)
    lines = [f"## {results['family']}", "",
             "| R | best built-in | RMS | MMD² | best scale-wise | cost | RMS | MMD² | ratio | full-res control | RMS "
             "| MMD² |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in SCALE_LISTS:
        b = best(results["builtins"], r)
        s, f = best(results["scalewise"], r, "scale-wise"), best(results["scalewise"], r, "full-res")
        if not (b and s and f):
            continue
        lines.append(f"| {r} | {b[0]} | {b[1]['error']:.4f} | {mmd(b[1])} | {s[0]} | {s[1]['cost']:.2f} "
                     f"| {s[1]['error']:.4f} | {mmd(s[1])} | {s[1]['error'] / b[1]['error']:.2f} | {f[0]} "
                     f"| {f[1]['error']:.4f} | {mmd(f[1])} |")  # fmt: skip
    if cheap:
        lines.append(f"\nAt equal compute: the best built-in at {EQUAL_COST_ROUNDS} rounds (cost "
                     f"{EQUAL_COST_ROUNDS}), {cheap[0]}: RMS {cheap[1]['error']:.4f}, MMD² {mmd(cheap[1])}.")  # fmt: skip
    return "\n".join(lines)


def mmd(cell_: dict[str, Any]) -> str:
    return f"{cell_['patch_mmd2']:.4f}" if "patch_mmd2" in cell_ else "-"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=("edm", "eps", "flow"), required=True)
    p.add_argument("--upscales", nargs="+", default=["bicubic"], help="resize modes of the scale-wise rows")
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/results/families"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    comfy = comfy_or_exit(args.threads)
    results = run_family(args, comfy)
    path = write_results(args.out, f"scalewise_{args.family}.json", results)
    print(summary(results))  # noqa: T201 (the report)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
