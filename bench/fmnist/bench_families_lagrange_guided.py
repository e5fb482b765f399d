"""Issue 16 A: EPD Lagrange Sampler with guidance (cfg 3) at 5 rounds, and its wall-clock against dpmpp_2m.

Same setting as bench_families_lagrange.py (FamilySetting, error = pixel RMS to a converged reference
from the same noise, EPD K = 1 on ``--ref-steps`` sigmas), at ``--cfg`` and R = ``--rounds``:
- Lagrange: the pairs that led the cfg-1 scan (each configuration's two best schedulers at R in
  bench/results/families/lagrange_<family>.json), run again at this cfg;
- built-ins: the ``--peers`` best built-in pairs of the stored table at this cfg (<family>.json, all
  64 pairs at 5 rounds, run with 300 reference steps) plus dpmpp_2m on its best scheduler, re-run here
  against this run's reference so that both sides share it.
Wall-clock: seconds per image with torch on ``--threads`` threads, the minimum of ``--repeats`` runs,
for the best Lagrange cell and dpmpp_2m's best cell at R, at cfg 1 and at ``--cfg``; also the process's CPU
seconds, which other jobs on a shared machine disturb less. ``--timing-only`` redoes just the timing
from the written JSON. A K-node sweep is one
batched call of K x B samples, which a CPU runs in about K times the time of B: CPU timing counts K
points as K x compute; only an accelerator with spare batch capacity runs them in the time of one.

    COMFYUI_PATH=/opt/comfy/ComfyUI python -m bench.fmnist.bench_families_lagrange_guided --family edm --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from bench.fmnist.bench_families import BUILTINS, FamilySetting, comfy_or_exit, rms
from bench.fmnist.bench_families_lagrange import CONFIGS, LagrangeSetting, best, best_pairs, builtin_rows, lagrange_rows

log = logging.getLogger(__name__)
RESULTS = Path("bench/results/families")


def stored_builtins(family: str, cfg: float, rounds: int, peers: int) -> list[str]:
    """The ``peers`` best built-in pairs at ``rounds`` in the stored family table, plus dpmpp_2m's best."""
    rows = json.loads((RESULTS / f"{family}.json").read_text())["cfgs"][str(cfg)]["rows"]
    mine = {n: r[str(rounds)]["error"] for n, r in rows.items() if n.split(" / ")[0] in BUILTINS and str(rounds) in r}
    ranked = sorted(mine, key=mine.get)
    dpm = [n for n in ranked if n.startswith("dpmpp_2m / ")][:1]
    return list(dict.fromkeys(ranked[:peers] + dpm))


def cfg1_leaders(family: str, rounds: int) -> tuple[list[str], dict[str, Any]]:
    """The cfg-1 Lagrange leaders (two best schedulers per configuration at ``rounds``) and the cfg-1 block."""
    block = json.loads((RESULTS / f"lagrange_{family}.json").read_text())["cfgs"]["1.0"]
    return best_pairs(block["lagrange"], rounds, 2, [c.name for c in CONFIGS]), block


def seconds_per_image(run: Any, run_args: tuple, batch: int, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds per image, each the fastest of ``repeats`` runs (the least disturbed on a shared machine)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run(*run_args)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall) / batch, min(cpu) / batch


def timing(args: argparse.Namespace, comfy: Any, cfg: float, lagrange_pair: str, dpm_pair: str) -> dict[str, Any]:
    """Wall-clock of the best Lagrange pair and dpmpp_2m's pair at R rounds and this cfg (no reference needed)."""
    setting = FamilySetting(args.family, cfg, args.batch, args.seed, comfy)
    lag, by_name = LagrangeSetting(setting), {c.name: c for c in CONFIGS}
    name, scheduler = lagrange_pair.split(" / ")
    out = {"lagrange": lagrange_pair, "dpmpp_2m": dpm_pair}
    lag_args, dpm_args = (by_name[name], scheduler, args.rounds), ("dpmpp_2m", dpm_pair.split(" / ")[1], args.rounds)
    out["lagrange_s_per_image"], out["lagrange_cpu_s_per_image"] = seconds_per_image(
        lag.run, lag_args, args.batch, args.repeats)  # fmt: skip
    out["dpmpp_2m_s_per_image"], out["dpmpp_2m_cpu_s_per_image"] = seconds_per_image(
        setting.builtin, dpm_args, args.batch, args.repeats)  # fmt: skip
    return out


def retime(args: argparse.Namespace, comfy: Any, results: dict[str, Any]) -> dict[str, Any]:
    """The timing block again, for the pairs already chosen in ``results``."""
    return {cfg: timing(args, comfy, float(cfg), t["lagrange"], t["dpmpp_2m"]) for cfg, t in results["timing"].items()}


def run_family(args: argparse.Namespace, comfy: Any) -> dict[str, Any]:
    start = time.monotonic()
    leaders, first = cfg1_leaders(args.family, args.rounds)
    peers = stored_builtins(args.family, args.cfg, args.rounds, args.peers)
    setting = FamilySetting(args.family, args.cfg, args.batch, args.seed, comfy)
    ref = setting.reference(args.ref_steps)
    floor = rms(setting.reference(args.ref_steps // 2), ref)
    log.info("%s cfg %s: reference floor %.2e", args.family, args.cfg, floor)
    builtins = builtin_rows(setting, ref, peers, [args.rounds])
    lagrange = lagrange_rows(LagrangeSetting(setting), ref, leaders, [args.rounds])
    log.info("cfg %s rows done: %.0f s", args.cfg, time.monotonic() - start)
    dpm = best({n: r for n, r in builtins.items() if n.startswith("dpmpp_2m / ")}, args.rounds, exact=True)
    dpm1 = best({n: r for n, r in first["builtins"].items() if n.startswith("dpmpp_2m / ")}, args.rounds, True)
    guided = {"reference_floor": floor, "builtins": builtins, "lagrange": lagrange, "rounds": [args.rounds]}
    times = {
        "1.0": timing(args, comfy, 1.0, best(first["lagrange"], args.rounds, False)[0], dpm1[0]),
        str(args.cfg): timing(args, comfy, args.cfg, best(lagrange, args.rounds, False)[0], dpm[0]),
    }
    return {"family": args.family, "batch": args.batch, "seed": args.seed, "ref_steps": args.ref_steps,
            "threads": args.threads, "repeats": args.repeats, "cfgs": {str(args.cfg): guided}, "timing": times,
            "seconds": round(time.monotonic() - start)}  # fmt: skip


def summary(results: dict[str, Any]) -> str:
    """Markdown: per cfg the best built-in, dpmpp_2m, the best Lagrange cell, and the timings."""
    lines = [f"## {results['family']}"]
    for cfg, block in results["cfgs"].items():
        r = block["rounds"][0]
        b, g = best(block["builtins"], r, exact=True), best(block["lagrange"], r, exact=False)
        lines.append(f"cfg {cfg}, R {r} (floor {block['reference_floor']:.1e}): best built-in {b[0]} "
                     f"{b[1]['error']:.4f}; Lagrange {g[0]} {g[1]['error']:.4f} ({g[1]['rounds']} rounds, "
                     f"{g[1]['evals']:.0f} evals), ratio {g[1]['error'] / b[1]['error']:.2f}")  # fmt: skip
    for cfg, t in results["timing"].items():
        lines.append(
            f"cfg {cfg} s/image (CPU s): {t['lagrange']} {t['lagrange_s_per_image']:.4f} "
            f"({t.get('lagrange_cpu_s_per_image', float('nan')):.4f}), {t['dpmpp_2m']} "
            f"{t['dpmpp_2m_s_per_image']:.4f} ({t.get('dpmpp_2m_cpu_s_per_image', float('nan')):.4f})"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=("edm", "eps", "flow"), required=True)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--peers", type=int, default=4, help="best stored built-in pairs re-run at this cfg")
    p.add_argument("--repeats", type=int, default=3, help="timing runs per cell (the minimum is kept)")
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timing-only", action="store_true", help="redo the timing of the written JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    comfy = comfy_or_exit(args.threads)
    path = RESULTS / f"lagrange_{args.family}_cfg{args.cfg:g}.json"
    if args.timing_only:
        results = json.loads(path.read_text())
        results["timing"] = retime(args, comfy, results)
    else:
        results = run_family(args, comfy)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(summary(results))  # noqa: T201 (the report)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
