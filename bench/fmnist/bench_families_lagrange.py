"""Issue 16 A: EPD Lagrange Sampler against ComfyUI's best built-in per model family, through ComfyUI's real stack.

Same setting as bench_families.py (imported from it, read-only): a trained Fashion-MNIST UNet of one
family in a real ComfyUI MODEL, CFGGuider -> KSAMPLER -> model_sampling, the same noise and classes,
error = pixel RMS to a converged reference from the same noise (EPD K = 1 on ``--ref-steps`` sigmas).

At each budget of R sequential model rounds:
- built-ins: every one of BUILTINS on every scheduler of SCHEDULERS at ``--search`` rounds, then each
  built-in's two best schedulers at the other budgets (bench_families' rule); the peer is the best;
- the Lagrange sampler (the pack's KSAMPLER function, nodes/comfy/lagrange.py) for each
  configuration of CONFIGS on every scheduler at ``--search`` rounds, then its two best schedulers at
  the others. Its grid is the scheduler's N intervals ending at 0, with N the largest whose rounds
  fit the budget (``rounds_of``), so a Lagrange cell may use fewer rounds than R, never more.
Per model evaluation (a K-node sweep is K evaluations), the best built-in pairs at R = max(rounds)
are also run at ``--eval-budgets`` rounds (= evaluations).

    COMFYUI_PATH=/opt/comfy/ComfyUI python -m bench.fmnist.bench_families_lagrange --family edm --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import time
from dataclasses import dataclass
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
    rms,
    write_results,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LagrangeConfig:
    """One EPD Lagrange Sampler setting (nodes Chebyshev-Lobatto, the node's default)."""

    order: int
    refinements: int
    warm: bool

    @property
    def name(self) -> str:
        return f"Lagrange K{self.order} R{self.refinements}" + (" warm" if self.warm else "")

    def options(self) -> dict[str, Any]:
        return {"order": self.order, "refinements": self.refinements, "nodes": "chebyshev",
                "warm_start": self.warm, "parallel": "batched"}  # fmt: skip


CONFIGS = tuple(
    LagrangeConfig(k, r, w) for k, r, w in [(1, 1, False), (2, 1, False), (2, 2, False), (3, 2, False),
                                            (1, 1, True), (2, 1, True), (3, 1, True), (2, 2, True)]
)  # fmt: skip


def rounds_of(config: LagrangeConfig, intervals: int) -> int:
    """Sequential model calls of one run on ``intervals`` intervals ending at 0 (epd_core.lagrange's loop).

    Each interval: one call at the left node (none when warm, after the first) and one per sweep; the
    step to 0 has K - 1 unknown nodes, so K = 1 makes no sweep call there.
    """
    total = 0
    for i in range(intervals):
        last = i == intervals - 1
        sweeps = config.refinements if (config.order > 1 or not last) else 0
        total += sweeps + (0 if config.warm and i > 0 else 1)
    return total


def intervals_for(config: LagrangeConfig, budget: int) -> int | None:
    """The most intervals whose run fits ``budget`` rounds, or None."""
    fits = [n for n in range(1, budget + 1) if rounds_of(config, n) <= budget]
    return max(fits) if fits else None


class LagrangeSetting:
    """Runs the pack's Lagrange sampler function on a FamilySetting."""

    def __init__(self, setting: FamilySetting) -> None:
        load_pack()
        from comfyui_epd.nodes.comfy import lagrange

        self.setting, self.fn = setting, lagrange.sample_lagrange_comfy

    def run(self, config: LagrangeConfig, scheduler: str, budget: int) -> tuple[torch.Tensor, Any]:
        n = intervals_for(config, budget)
        if n is None:
            raise ValueError(f"{config.name} needs more than {budget} rounds")
        setting = self.setting
        sigmas = setting.comfy.samplers.calculate_sigmas(setting.model_sampling, scheduler, n)
        return setting.sample(self.fn, config.options(), sigmas)


def best_pairs(rows: dict[str, dict[str, Any]], budget: int, per_row: int, prefixes: list[str]) -> list[str]:
    """For each prefix (a sampler or configuration name), its ``per_row`` best schedulers at ``budget``."""
    picked = []
    for prefix in prefixes:
        mine = [n for n in rows if n.startswith(prefix + " / ") and str(budget) in rows[n]]
        mine = [n for n in mine if math.isfinite(rows[n][str(budget)]["error"])]
        picked += sorted(mine, key=lambda n: rows[n][str(budget)]["error"])[:per_row]
    return picked


def builtin_rows(setting: FamilySetting, ref: torch.Tensor, pairs: list[str], budgets: list[int]) -> dict:
    rows: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        name, scheduler = pair.split(" / ")
        rows[pair] = {str(r): cell(setting.builtin, (name, scheduler, r), ref) for r in budgets}
    return rows


def lagrange_rows(lag: LagrangeSetting, ref: torch.Tensor, pairs: list[str], budgets: list[int]) -> dict:
    by_name = {c.name: c for c in CONFIGS}
    rows: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        name, scheduler = pair.split(" / ")
        rows[pair] = {str(r): cell(lag.run, (by_name[name], scheduler, r), ref) for r in budgets}
    return rows


def merge(rows: dict[str, dict[str, Any]], more: dict[str, dict[str, Any]]) -> None:
    for name, cells in more.items():
        rows.setdefault(name, {}).update(cells)


def search_cfg(args: argparse.Namespace, setting: FamilySetting, ref: torch.Tensor) -> dict[str, Any]:
    """The full scan at ``args.search`` rounds, the leaders at the other budgets, built-ins per evaluation."""
    lag = LagrangeSetting(setting)
    all_builtins = [f"{b} / {s}" for b, s in itertools.product(BUILTINS, SCHEDULERS)]
    all_lagrange = [f"{c.name} / {s}" for c, s in itertools.product(CONFIGS, args.schedulers)]
    builtins = builtin_rows(setting, ref, all_builtins, [args.search])
    log.info("built-in scan done")
    lagrange = lagrange_rows(lag, ref, all_lagrange, [args.search])
    log.info("Lagrange scan done")
    others = [r for r in args.rounds if r != args.search]
    merge(builtins, builtin_rows(setting, ref, best_pairs(builtins, args.search, 2, list(BUILTINS)), others))
    lead = best_pairs(lagrange, args.search, 2, [c.name for c in CONFIGS])
    merge(lagrange, lagrange_rows(lag, ref, lead, others))
    top = max(args.rounds)
    finite = [n for n in builtins if str(top) in builtins[n] and math.isfinite(builtins[n][str(top)]["error"])]
    peers = sorted(finite, key=lambda n: builtins[n][str(top)]["error"])[: args.eval_peers]
    merge(builtins, builtin_rows(setting, ref, peers, args.eval_budgets))
    return {"builtins": builtins, "lagrange": lagrange}


def guided_cfg(args: argparse.Namespace, setting: FamilySetting, ref: torch.Tensor, first: dict) -> dict[str, Any]:
    """With guidance: the cfg-1 leaders only (built-ins and Lagrange pairs that had a cell at every budget)."""
    lag = LagrangeSetting(setting)
    b_pairs = [n for n, row in first["builtins"].items() if all(str(r) in row for r in args.rounds)]
    l_pairs = [n for n, row in first["lagrange"].items() if all(str(r) in row for r in args.rounds)]
    return {
        "builtins": builtin_rows(setting, ref, b_pairs, args.rounds),
        "lagrange": lagrange_rows(lag, ref, l_pairs, args.rounds),
    }


def best(rows: dict[str, dict[str, Any]], budget: int, exact: bool) -> tuple[str, dict[str, Any]] | None:
    """The row with the lowest finite error at ``budget`` (rounds == budget when ``exact``, else <=)."""
    ok = [
        (n, row[str(budget)])
        for n, row in rows.items()
        if str(budget) in row
        and math.isfinite(row[str(budget)]["error"])
        and (row[str(budget)]["rounds"] == budget if exact else 0 < row[str(budget)]["rounds"] <= budget)
    ]
    return min(ok, key=lambda item: item[1]["error"]) if ok else None


def builtin_at_evals(rows: dict[str, dict[str, Any]], evals: float) -> tuple[int, str, float] | None:
    """The best built-in at the largest measured budget <= ``evals`` (a built-in's evaluations = its rounds)."""
    budgets = sorted({int(r) for row in rows.values() for r in row if int(r) <= evals + 1e-9})
    for budget in reversed(budgets):
        found = best(rows, budget, exact=True)
        if found:
            return budget, found[0], found[1]["error"]
    return None


def summary(results: dict[str, Any]) -> str:
    """Markdown per cfg: at each R the best built-in, the best Lagrange cell, and the built-in at its evaluations."""
    lines = [f"## {results['family']}"]
    for cfg, block in results["cfgs"].items():
        lines += [f"\ncfg {cfg} (reference floor {block['reference_floor']:.2e})\n",
                  "| R | best built-in | error | best Lagrange (rounds, evals) | error | ratio | built-in at its evals |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in block["rounds"]:
            b, g = best(block["builtins"], r, exact=True), best(block["lagrange"], r, exact=False)
            if not b or not g:
                continue
            at = builtin_at_evals(block["builtins"], g[1]["evals"])
            peer = f"{at[1]} R{at[0]}: {at[2]:.4f}" if at else "-"
            lines.append(f"| {r} | {b[0]} | {b[1]['error']:.4f} | {g[0]} ({g[1]['rounds']}, {g[1]['evals']:.0f}) "
                         f"| {g[1]['error']:.4f} | {g[1]['error'] / b[1]['error']:.2f} | {peer} |")  # fmt: skip
    return "\n".join(lines)


def run_family(args: argparse.Namespace, comfy: Any) -> dict[str, Any]:
    results: dict[str, Any] = {"family": args.family, "batch": args.batch, "seed": args.seed,
                               "ref_steps": args.ref_steps, "cfgs": {}}  # fmt: skip
    first: dict[str, Any] | None = None
    for cfg in args.cfgs:
        start = time.monotonic()
        setting = FamilySetting(args.family, cfg, args.batch, args.seed, comfy)
        ref = setting.reference(args.ref_steps)
        floor = rms(setting.reference(args.ref_steps // 2), ref)
        log.info("%s cfg %s: reference floor %.2e", args.family, cfg, floor)
        block = search_cfg(args, setting, ref) if first is None else guided_cfg(args, setting, ref, first)
        first = first or block
        block |= {"reference_floor": floor, "rounds": args.rounds, "seconds": round(time.monotonic() - start)}
        results["cfgs"][str(cfg)] = block
        log.info("%s cfg %s: %.0f s", args.family, cfg, time.monotonic() - start)
        write(args, results)
    return results


def write(args: argparse.Namespace, results: dict[str, Any]) -> Path:
    return write_results(args.out, f"lagrange_{args.family}{args.tag}.json", results)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=("edm", "eps", "flow"), required=True)
    p.add_argument("--cfgs", type=float, nargs="+", default=[1.0])
    p.add_argument("--rounds", type=int, nargs="+", default=[3, 5, 7, 9])
    p.add_argument("--search", type=int, default=5, help="round budget of the full scan")
    p.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS), help="grids scanned for the Lagrange sampler")
    p.add_argument("--eval-budgets", type=int, nargs="*", default=[12, 16, 20], help="extra built-in budgets")
    p.add_argument("--eval-peers", type=int, default=3, help="built-in pairs run at --eval-budgets")
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-steps", type=int, default=200)
    p.add_argument("--tag", default="", help="suffix of the output file name")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/results/families"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    comfy = comfy_or_exit(args.threads)
    results = run_family(args, comfy)
    print(summary(results))  # noqa: T201 (the report)
    log.info("wrote %s", write(args, results))


if __name__ == "__main__":
    main()
