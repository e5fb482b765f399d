"""Issue-2 benchmark: solver error against a converged reference on an exact denoiser.

The data is a Gaussian mixture fitted to scikit-learn's digits (epd_core.digits), so the
denoiser is exact and all the error is the solver's. Every row spends R = 3, 5, 7, 9
sequential model rounds (measured, not assumed). Settings:

1. unconditional, the k-diffusion denoiser contract called directly;
2. class-conditional through ComfyUI's real CFGGuider and a real MODEL
   (testing_nodes.toy_model), a different class per sample, at CFG 1, 3 and 7.5.

Without COMFYUI_PATH only setting 1 runs, against epd_core's own baselines.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_exact.py [--quick] [--out bench/results]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended: a ComfyUI checkout put first must keep its own `nodes`

import torch  # noqa: E402

from bench.exact_report import markdown, plot  # noqa: E402
from bench.exact_runs import core_karras, direct_rows, epd_grid_and_table, guided_rows  # noqa: E402
from bench.exact_setup import comfy_modules, with_model_sampling  # noqa: E402
from epd_core.digits import SIGMA_MAX, ExactModel, digits_mixture, reference_solution, solution_error, start_noise  # noqa: E402
from epd_core.solver import sample_epd  # noqa: E402

BATCH, SEED = 64, 0
FULL = {"rounds": [3, 5, 7, 9], "cfgs": [1.0, 3.0, 7.5], "reference_steps": 400}
QUICK = {"rounds": [3, 5], "cfgs": [7.5], "reference_steps": 200}


@dataclass
class DirectSetting:
    """Setting 1: a plain denoiser (with an EDM model_sampling attached when ComfyUI is there)."""

    mixture: Any
    comfy: Any
    x: torch.Tensor
    batch: int = BATCH

    def make(self) -> ExactModel:
        model = ExactModel(self.mixture)
        return model if self.comfy is None else with_model_sampling(model, self.comfy)

    def karras(self, n: int) -> torch.Tensor:
        if self.comfy is None:
            return core_karras(n)
        return self.comfy.samplers.calculate_sigmas(
            self.make().inner_model.inner_model.model_sampling, "karras", n
        ).double()

    def reference(self, steps: int) -> torch.Tensor:
        return reference_solution(ExactModel(self.mixture), self.x, steps)


class GuidedSetting:
    """Setting 2: the toy MODEL behind a CFGGuider, class b % 10 for sample b, negative = unconditional.

    The latent is float32 as in ComfyUI (its uni_pc fails on float64 latents); the toy
    network computes in float64, apply_model hands back float32.
    """

    def __init__(self, mixture: Any, comfy: Any, cfg: float, batch: int = BATCH) -> None:
        from testing_nodes.toy_model import class_conditioning, empty_conditioning, toy_model_patcher

        self.comfy, self.batch = comfy, batch
        self.guider = comfy.samplers.CFGGuider(toy_model_patcher(mixture, "edm"))
        self.guider.set_conds(class_conditioning(torch.arange(batch) % 10), empty_conditioning())
        self.guider.set_cfg(cfg)
        self.z = (start_noise(batch, SEED) / SIGMA_MAX).reshape(batch, 1, 8, 8).float()  # ComfyUI's noise is float32

    def karras(self, n: int) -> torch.Tensor:
        """ComfyUI's karras sigmas as KSampler has them (float32: uni_pc fails on float64 sigmas)."""
        model_sampling = self.guider.model_patcher.get_model_object("model_sampling")
        return self.comfy.samplers.calculate_sigmas(model_sampling, "karras", n)

    def sample(self, sampler: Any, sigmas: torch.Tensor) -> torch.Tensor:
        out = self.guider.sample(self.z, torch.zeros_like(self.z), sampler, sigmas, disable_pbar=True, seed=SEED)
        return out.double().reshape(self.batch, -1)

    def reference(self, steps: int) -> torch.Tensor:
        """EPD data form with K = 1 on ``steps`` log-spaced sigmas 80 -> 1e-4, then 0, through the same guider."""
        sigmas = torch.exp(torch.linspace(math.log(SIGMA_MAX), math.log(1e-4), steps + 1, dtype=torch.float64))
        sampler = self.comfy.samplers.KSAMPLER(
            sample_epd, extra_options={"num_points": 1, "form": "data", "kind": "ve", "tail": "keep"}
        )
        return self.sample(sampler, torch.cat([sigmas, sigmas.new_zeros(1)]))


def load_bridge() -> tuple[Callable | None, str]:
    """The pack's bridge sampler function (imported as package comfyui_epd, as ComfyUI would), if it imports."""
    try:
        if "comfyui_epd" not in sys.modules:
            spec = importlib.util.spec_from_file_location(
                "comfyui_epd", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
            )
            module = importlib.util.module_from_spec(spec)
            sys.modules["comfyui_epd"] = module
            spec.loader.exec_module(module)
        from comfyui_epd.nodes.bridge import sample_epd_comfy
    except Exception as err:  # the bench still runs on the engine alone; the reason is reported
        sys.modules.pop("comfyui_epd", None)
        return None, f"epd_core.solver through comfy.samplers.KSAMPLER (bridge not importable: {err!r})"
    return sample_epd_comfy, "nodes.bridge.sample_epd_comfy through comfy.samplers.KSAMPLER"


def run_setting(rows: dict[str, Callable], setting: Any, rounds: list[int], ref_steps: int) -> dict[str, Any]:
    """Every row at every round budget: error vs the setting's reference, measured rounds and evaluations."""
    ref = setting.reference(ref_steps)
    out: dict[str, Any] = {}
    for name, row in rows.items():
        out[name] = {}
        for r in rounds:
            try:
                x, counter = row(r, setting)
                cell = {
                    "error": solution_error(x.reshape(len(ref), -1).double(), ref),
                    "rounds": counter.rounds,
                    "evals": counter.evals,
                }
            except Exception as err:  # a crashing built-in is a result too
                cell = {"error": float("nan"), "rounds": -1, "evals": float("nan"), "failure": repr(err)}
            out[name][str(r)] = cell
    return out


def run_all(plan: dict[str, Any], comfy: Any | None) -> dict[str, Any]:
    """Setting 1 always, setting 2 when ComfyUI is importable."""
    mixture = digits_mixture()
    bridge, bridge_note = load_bridge() if comfy is not None else (None, "no ComfyUI")
    settings: dict[str, Any] = {}
    direct = DirectSetting(mixture, comfy, start_noise(BATCH, SEED))
    title = "unconditional, k-diffusion denoiser called directly" + (
        "" if comfy else " (no ComfyUI: epd_core baselines)"
    )
    settings["unconditional"] = {
        "title": title,
        "rows": run_setting(direct_rows(comfy), direct, plan["rounds"], plan["reference_steps"]),
    }
    for cfg in plan["cfgs"] if comfy is not None else []:
        guided = GuidedSetting(mixture, comfy, cfg)
        rows = run_setting(guided_rows(comfy, bridge), guided, plan["rounds"], plan["reference_steps"])
        settings[f"cfg={cfg:g}"] = {
            "title": f"class per sample through ComfyUI CFGGuider + toy MODEL, CFG {cfg:g}",
            "rows": rows,
        }
    meta = {
        "batch": BATCH,
        "seed": SEED,
        "rounds": plan["rounds"],
        "comfyui": comfy is not None,
        "epd_sampler": bridge_note,
    }
    meta.update(
        reference=f"EPD data form, K=1, {plan['reference_steps']} log-spaced steps 80 -> 1e-4 then 0 (same model path)"
    )
    meta.update(epd=f"default_table K=2 ({table_kinds()}), default grid epd_sigmas, AFS on: S=(R+1)/2 steps")
    return {"meta": meta, "settings": settings}


def table_kinds() -> str:
    """Which training-free table default_table gives each EPD form (recorded with the results)."""
    kinds = {form: epd_grid_and_table(3, form)[1].metadata.get("table_kind") for form in ("data", "direction")}
    return ", ".join(f"{form}: {kind}" for form, kind in kinds.items())


def failures(results: dict[str, Any]) -> list[str]:
    """One line per crashed run."""
    return [
        f"{key} / {name} / R={r}: {cell['failure']}"
        for key, setting in results["settings"].items()
        for name, row in setting["rows"].items()
        for r, cell in row.items()
        if "failure" in cell
    ]


def say(text: str) -> None:
    """The CLI's report goes to stdout."""
    sys.stdout.write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="R = 3, 5 and CFG 7.5 only, 200-step reference")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results", help="folder for exact.json and exact.png"
    )
    args = parser.parse_args(argv)
    comfy = comfy_modules()
    if comfy is None:
        say(
            "COMFYUI_PATH is not set: running setting 1 only, against epd_core's baselines (euler, heun, dpm_2, ipndm)."
        )
    start = time.time()
    results = run_all(QUICK if args.quick else FULL, comfy)
    results["meta"]["seconds"] = round(time.time() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "exact.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "exact.png")
    say(f"EPD through ComfyUI: {results['meta']['epd_sampler']}\n")
    say(markdown(results))
    for line in failures(results):
        say(f"FAILED: {line}")
    say(f"wrote {args.out / 'exact.json'} and {args.out / 'exact.png'} in {results['meta']['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
