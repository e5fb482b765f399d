"""Issue 14: EPD against ComfyUI's best built-in on three model families, through ComfyUI's real stack.

The three Fashion-MNIST UNets (families.py, unet.py) sit in a real ComfyUI MODEL (comfy_model.py):
EDM (continuous), EPS on SD1.5's discrete schedule, and rectified flow with shift 3 as SD3. Every
run goes CFGGuider -> KSAMPLER -> BaseModel -> model_sampling, from the same noise, class b % 10 for
sample b (negative: the null label). The measure is the RMS over pixels, averaged over samples, of
the difference to a converged reference from the same noise (EPD K = 1 data form on ``--ref-steps``
log-spaced sigmas, tail kept; the same run at half the steps gives the reference's own floor).

Rows, at R sequential model rounds (counted on every run, not assumed):
- every built-in of BUILTINS with every scheduler of SCHEDULERS (KSampler's grid: R steps; uni_pc
  R + 1 steps with the penultimate dropped, as KSampler does); the peer at R is the best of all;
- training-free EPD configurations (schedule x K x form x table x plugin), S = (R + 1) / 2 steps
  with AFS, sampled by the pack's own sampler function (nodes/comfy/sampling.sample_epd_comfy).

    COMFYUI_PATH=/path/to/ComfyUI python -m bench.fmnist.bench_families --family eps --out bench/results/families
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.exact_runs import Counter, counting
from bench.exact_setup import comfy_modules
from epd_core.plan import prepare_sigmas, resolve_tail
from epd_core.tables import default_table

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = Path(__file__).parent / "weights"
BUILTINS = ("euler", "dpmpp_2m", "ipndm", "ipndm_v", "deis", "uni_pc", "gradient_estimation", "res_multistep")
# normal gave the same grid as exponential, and linear_quadratic lost by 2-3x, in a first EDM pass.
SCHEDULERS = ("karras", "exponential", "simple", "sgm_uniform", "beta", "kl_optimal")
EPD_SCHEDULES = ("auto", "time_uniform", "logsnr", "karras", "simple", "kl_optimal")


@dataclass(frozen=True)
class EPDConfig:
    """One training-free EPD configuration."""

    schedule: str  # an EPD Sigmas schedule ("auto", polynomial, logsnr, time_uniform) or a ComfyUI scheduler
    num_points: int
    form: str
    table: str  # uniform or gauss_legendre
    plugin: bool

    @property
    def name(self) -> str:
        solver = "EPD-Plugin" if self.plugin else "EPD"
        return f"{solver} K{self.num_points} {self.form} {self.table} {self.schedule}"


def node_defaults() -> dict[str, Any]:
    """EPD Distill's widget defaults, read from the node's own schema."""
    load_pack()
    from comfyui_epd.nodes.distill_nodes import distill_inputs

    return {i.id: i.default for i in distill_inputs() if getattr(i, "default", None) is not None}


def parse_config(name: str) -> EPDConfig:
    """The EPDConfig of a row name, e.g. "EPD-Plugin K2 data uniform karras"."""
    solver, k, form, table, schedule = name.split()
    return EPDConfig(schedule, int(k[1:]), form, table, solver == "EPD-Plugin")


def load_pack() -> Any:
    """The pack imported as ComfyUI imports it (package comfyui_epd), for its sampler and grids."""
    if "comfyui_epd" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "comfyui_epd", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["comfyui_epd"] = module
        spec.loader.exec_module(module)
    from comfyui_epd.nodes.comfy import sampling

    return sampling


class FamilySetting:
    """One family at one cfg: the guider, the start noise and the reference."""

    def __init__(self, family: str, cfg: float, batch: int, seed: int, comfy: Any) -> None:
        from testing_nodes.toy_model import class_conditioning, empty_conditioning

        from .comfy_model import fmnist_model_patcher
        from .unet import load_denoiser

        self.family, self.cfg, self.batch, self.comfy, self.seed = family, cfg, batch, comfy, seed
        self.patcher = fmnist_model_patcher(load_denoiser(WEIGHTS / f"fmnist_{family}.safetensors"))
        self.guider = comfy.samplers.CFGGuider(self.patcher)
        self.guider.set_conds(class_conditioning(torch.arange(batch) % 10), empty_conditioning())
        self.guider.set_cfg(cfg)
        self.model_sampling = self.patcher.get_model_object("model_sampling")
        self.z = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
        self.pack = load_pack()

    def sample(self, fn: Any, options: dict[str, Any], sigmas: torch.Tensor) -> tuple[torch.Tensor, Counter]:
        counter = Counter(self.batch)
        sampler = self.comfy.samplers.KSAMPLER(counting(fn, counter), extra_options=options)
        out = self.guider.sample(self.z, torch.zeros_like(self.z), sampler, sigmas.float(), disable_pbar=True,
                                 seed=self.seed)  # fmt: skip
        return out.double().reshape(self.batch, -1), counter

    def reference(self, steps: int) -> torch.Tensor:
        """EPD K = 1 (data form) on ``steps`` log-spaced sigmas from sigma_max to sigma_min, then 0."""
        hi, lo = float(self.model_sampling.sigma_max), float(self.model_sampling.sigma_min)
        grid = torch.exp(torch.linspace(math.log(hi), math.log(lo), steps, dtype=torch.float64))
        sigmas = torch.cat([grid, grid.new_zeros(1)])
        options = {
            "num_points": 1,
            "form": "data",
            "tail": "keep",
            "afs": "off",
            "parallel": "batched",
            "plugin": "off",
        }
        return self.sample(self.pack.sample_epd_comfy, options, sigmas)[0]

    def builtin(self, name: str, scheduler: str, rounds: int) -> tuple[torch.Tensor, Counter]:
        steps = rounds + 1 if name == "uni_pc" else rounds
        sigmas = self.comfy.samplers.calculate_sigmas(self.model_sampling, scheduler, steps)
        if name == "uni_pc":
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        base = self.comfy.samplers.sampler_object(name)
        return self.sample(base.sampler_function, dict(base.extra_options), sigmas)

    def epd_grid(self, schedule: str, steps: int) -> torch.Tensor:
        """``steps`` EPD steps on ``schedule``, its [..., sigma_min, 0] tail dropped as EPD Sampler's auto does."""
        sigma_min = float(self.model_sampling.sigma_min)
        for n in (steps, steps + 1):
            if schedule in self.comfy.samplers.SCHEDULER_NAMES:
                raw = self.comfy.samplers.calculate_sigmas(self.model_sampling, schedule, n).double()
            else:
                raw = self.pack.schedule_sigmas(self.patcher, schedule, n, True, "bench").double()
            grid = prepare_sigmas(raw, resolve_tail("auto", raw, sigma_min))
            if len(grid) - 1 == steps:
                return grid
        raise ValueError(f"schedule {schedule} gives no {steps}-step grid")

    def epd(self, config: EPDConfig, rounds: int) -> tuple[torch.Tensor, Counter]:
        grid = self.epd_grid(config.schedule, (rounds + 1) // 2)
        table = default_table(grid, config.num_points, config.table, form=config.form, afs=True)
        options = {
            "params": table,
            "num_points": config.num_points,
            "form": config.form,
            "tail": "keep",
            "afs": "on",
            "parallel": "batched",
            "plugin": "on" if config.plugin else "off",
            "max_order": 3,
        }
        return self.sample(self.pack.sample_epd_comfy, options, grid)

    def distill(self, rounds: int, changes: dict[str, Any]) -> tuple[Any, float]:
        """EPD Distill's own run (node defaults + ``changes``) at this cfg for ``rounds``; (table, seconds)."""
        from comfyui_epd.nodes.train.distill import run_distill

        from testing_nodes.toy_model import class_conditioning, empty_conditioning

        opts = node_defaults() | {"cfg": self.cfg, "width": 28, "height": 28, "steps": (rounds + 1) // 2}
        opts |= {"table": None, "vae": None} | changes
        positive = [class_conditioning(c) for c in range(10)]
        start = time.monotonic()
        table, _ = run_distill(self.patcher, positive, [empty_conditioning()], opts, None)
        return table, time.monotonic() - start

    def learned(self, table: Any) -> tuple[torch.Tensor, Counter]:
        """Sample with a learned table on its own grid, form as the table records (EPD Sampler's auto)."""
        options = {"params": table, "num_points": table.num_points, "form": "auto", "tail": "auto", "afs": "auto"}
        return self.sample(self.pack.sample_epd_comfy, options, table.sigmas)


def rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over samples of the pixel RMS of x - ref."""
    return float(((x - ref) ** 2).mean(dim=1).sqrt().mean())


def cell(run: Any, run_args: tuple, ref: torch.Tensor) -> dict[str, Any]:
    """One solver run's error to ``ref``, its counted rounds and evaluations."""
    try:
        x, counter = run(*run_args)
    except Exception as err:  # a sampler that crashes or diverges is a result too
        return {"error": float("nan"), "rounds": -1, "failure": repr(err)[:200]}
    err = rms(x, ref) if torch.isfinite(x).all() else float("nan")
    return {"error": err, "rounds": counter.rounds, "evals": counter.evals}


def epd_configs(schedules: tuple[str, ...]) -> list[EPDConfig]:
    """The training-free configurations searched at the search budget.

    K = 1, 2 (K = 3 never beat K = 2 in a first pass on EDM); the data form with either table and the
    uniform one with the plugin; the direction form with Gauss-Legendre only (uniform and plugin diverged
    there, and Gauss-Legendre with the plugin was 2-4x worse than without, in the same pass).
    """
    configs = []
    for schedule, k in itertools.product(schedules, (1, 2)):
        configs.append(EPDConfig(schedule, k, "data", "uniform", False))
        configs.append(EPDConfig(schedule, k, "data", "uniform", True))
        configs.append(EPDConfig(schedule, k, "data", "gauss_legendre", False))
        configs.append(EPDConfig(schedule, k, "direction", "gauss_legendre", False))
    return configs


def ranked(rows: dict[str, dict[str, Any]], r: int, prefix: str | None) -> list[str]:
    """Row names with a finite error at exactly ``r`` rounds, best first; prefix "EPD" or None (built-ins)."""
    names = [
        name
        for name, row in rows.items()
        if (name.startswith("EPD") if prefix else not name.startswith("EPD"))
        and str(r) in row
        and row[str(r)]["rounds"] == r
        and math.isfinite(row[str(r)]["error"])
    ]
    return sorted(names, key=lambda name: rows[name][str(r)]["error"])


def best_schedulers(rows: dict[str, dict[str, Any]], r: int, per_sampler: int) -> list[tuple[str, str]]:
    """The ``per_sampler`` best schedulers of each built-in at ``r`` rounds."""
    picked: list[tuple[str, str]] = []
    for name in BUILTINS:
        mine = [row for row in ranked(rows, r, None) if row.startswith(name + " / ")][:per_sampler]
        picked += [(name, row.split(" / ")[1]) for row in mine]
    return picked


def run_rows(
    setting: FamilySetting,
    ref: torch.Tensor,
    builtins: list,
    configs: list,
    rounds: list[int],
    rows: dict | None = None,
) -> dict:
    """Rows run into ``rows`` (a dict the caller may be writing out as it fills)."""
    rows = {} if rows is None else rows
    for name, scheduler in builtins:
        row = rows.setdefault(f"{name} / {scheduler}", {})
        row.update({str(r): cell(setting.builtin, (name, scheduler, r), ref) for r in rounds})
    for config in configs:
        rows.setdefault(config.name, {}).update({str(r): cell(setting.epd, (config, r), ref) for r in rounds})
    return rows


def run_family(args: argparse.Namespace, comfy: Any) -> dict[str, Any]:
    """Search at ``args.search`` rounds and cfg 1, then the leaders at every budget and with guidance."""
    results: dict[str, Any] = {"family": args.family, "batch": args.batch, "seed": args.seed, "cfgs": {}}
    configs = epd_configs(tuple(args.schedules))
    by_name = {c.name: c for c in configs}
    leaders: list[EPDConfig] = []
    picked: list[tuple[str, str]] = []
    for cfg in args.cfgs:
        start = time.monotonic()
        setting = FamilySetting(args.family, cfg, args.batch, args.seed, comfy)
        ref = setting.reference(args.ref_steps)
        floor = rms(setting.reference(args.ref_steps // 2), ref)
        rows: dict[str, dict[str, Any]] = {}
        results["cfgs"][str(cfg)] = {"reference_floor": floor, "rows": rows}
        if args.configs:
            chosen = [parse_config(name) for name in args.configs]
            run_rows(setting, ref, [], chosen, args.rounds if cfg == 1.0 else args.guided_rounds, rows)
        elif args.skip_search:
            pass
        elif cfg == args.cfgs[0]:
            all_builtins = list(itertools.product(BUILTINS, SCHEDULERS))
            run_rows(setting, ref, all_builtins, [], [args.search], rows)
            write(args, results)
            run_rows(setting, ref, [], configs, [args.search], rows)
            write(args, results)
            leaders = [by_name[n] for n in ranked(rows, args.search, "EPD")[: args.leaders]]
            picked = best_schedulers(rows, args.search, 1)
            others = [r for r in args.rounds if r != args.search]
            run_rows(setting, ref, picked, leaders, others, rows)
        else:
            run_rows(setting, ref, best_schedulers_all(picked), leaders, args.guided_rounds, rows)
        for label, changes in args.recipes.items():
            for r in args.distill_rounds:
                table, seconds = setting.distill(r, changes)
                rows.setdefault(f"EPD distilled, {label}", {})[str(r)] = cell(setting.learned, (table,), ref) | {
                    "train_seconds": round(seconds, 1)
                }
        results["cfgs"][str(cfg)]["seconds"] = time.monotonic() - start
        log.info("%s cfg %s: %.0f s, reference floor %.2e", args.family, cfg, time.monotonic() - start, floor)
        write(args, results)  # after every cfg, so a long run can be read as it goes
    return results


def best_schedulers_all(picked: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """With guidance: each built-in on its cfg-1 best scheduler plus karras (ComfyUI's usual default)."""
    extra = [(name, "karras") for name in BUILTINS]
    return list(dict.fromkeys(picked + extra))


def summary(results: dict[str, Any]) -> str:
    """Markdown: per cfg and R, the best built-in, the best EPD configuration and the default's ratio."""
    lines = [f"## {results['family']}"]
    for cfg, block in results["cfgs"].items():
        rows = block["rows"]
        rounds = sorted({int(r) for row in rows.values() for r in row}, key=int)
        lines.append(f"\ncfg {cfg} (reference floor {block['reference_floor']:.2e})\n")
        lines.append("| R | best built-in | error | best EPD | error | ratio |")
        lines.append("|---|---|---|---|---|---|")
        for r in rounds:
            ok = {
                name: row[str(r)]["error"]
                for name, row in rows.items()
                if str(r) in row and row[str(r)]["rounds"] == r and math.isfinite(row[str(r)]["error"])
            }
            builtin = {k: v for k, v in ok.items() if not k.startswith("EPD")}
            epd = {k: v for k, v in ok.items() if k.startswith("EPD")}
            if not builtin or not epd:
                continue
            b, e = min(builtin, key=builtin.get), min(epd, key=epd.get)
            lines.append(f"| {r} | {b} | {builtin[b]:.4f} | {e} | {epd[e]:.4f} | {epd[e] / builtin[b]:.2f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=("edm", "eps", "flow"), required=True)
    p.add_argument("--cfgs", type=float, nargs="+", default=[1.0, 3.0, 7.5])
    p.add_argument("--rounds", type=int, nargs="+", default=[3, 5, 7, 9], help="round budgets at cfg 1")
    p.add_argument("--guided-rounds", type=int, nargs="+", default=[5], help="round budgets with guidance")
    p.add_argument("--search", type=int, default=5, help="round budget of the full search at the first cfg")
    p.add_argument("--leaders", type=int, default=4, help="EPD configurations carried to the other budgets")
    p.add_argument("--schedules", nargs="+", default=list(EPD_SCHEDULES), help="EPD grids searched")
    p.add_argument("--batch", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-steps", type=int, default=300)
    p.add_argument("--distill-rounds", type=int, nargs="*", default=[5], help="budgets of the distilled rows")
    p.add_argument(
        "--recipes",
        type=json.loads,
        default={"node defaults": {}},
        help="JSON {label: {option: value}} of EPD Distill recipes (changes to the node defaults)",
    )
    p.add_argument("--skip-search", action="store_true", help="only the distilled rows")
    p.add_argument("--configs", nargs="*", default=[], help="only these EPD rows (names as in the JSON), no search")
    p.add_argument("--tag", default="", help="suffix of the output file name")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/results/families"))
    return p.parse_args(argv)


def comfy_or_exit(threads: int) -> Any:
    """Logging, torch threads and ComfyUI's modules for a family benchmark; exits without a checkout."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(threads)
    comfy = comfy_modules()
    if comfy is None:
        raise SystemExit("set COMFYUI_PATH to a ComfyUI checkout: this benchmark runs through ComfyUI's real stack")
    return comfy


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    comfy = comfy_or_exit(args.threads)
    results = run_family(args, comfy)
    print(summary(results))  # noqa: T201 (the report)
    log.info("wrote %s", write(args, results))


def write(args: argparse.Namespace, results: dict[str, Any]) -> Path:
    return write_results(args.out, f"{args.family}{args.tag}.json", results)


def write_results(out: Path, name: str, results: dict[str, Any]) -> Path:
    """``results`` as indented JSON in ``out / name`` (the folder made if needed); every family benchmark's output."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


if __name__ == "__main__":
    main()
