"""Markdown tables of the per-family benchmark (bench_families.py): EPD against the best built-in.

    python -m bench.fmnist.families_report [--results bench/results/families]

For each family the table has the best built-in (any sampler, any scheduler) at R rounds, the
training-free EPD row the nodes' ``auto`` settings pick for that family (``DEFAULT_ROWS``), the best
training-free EPD configuration searched, and the distilled rows; each with its error ratio to the
best built-in at the same R. Guided columns are the 5-round comparison at cfg 3 and 7.5.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

# What EPD Sigmas (schedule auto) + EPD Sampler (defaults: K = 2, no plugin, form auto, afs auto) run on
# each family: the direction form with its Gauss-Legendre table at cfg 1, the data form with the uniform
# table with guidance; grid polynomial (= ComfyUI's karras) or, for flow, flow_uniform (= ComfyUI's simple
# up to its 1000-step rounding). Keep in step with nodes/comfy/sampling.auto_schedule and epd_core/plan.py.
PLAIN_EDM_EPS = ("EPD K2 direction gauss_legendre karras", "EPD K2 data uniform karras")
# (cfg 1 row, guided row): what EPD Sampler's auto settings run, per family. "auto" rows ran on EPD Sigmas'
# auto grid (polynomial = karras for these two); flow's auto grid is flow_uniform = ComfyUI's simple.
DEFAULT_ROWS = {
    "edm": ("EPD-Plugin K2 data uniform auto", "EPD-Plugin K2 data uniform auto"),
    "eps": ("EPD-Plugin K2 data uniform auto", "EPD-Plugin K2 data uniform auto"),
    "flow": ("EPD K2 direction gauss_legendre simple", "EPD K2 data uniform simple"),
}
# The defaults before plugin "auto" (2026-12-03), kept in the table for comparison.
EARLIER_DEFAULT_ROWS = {"edm": PLAIN_EDM_EPS, "eps": PLAIN_EDM_EPS}
FAMILY_TITLES = {"eps": "EPS, SD1.5 discrete schedule", "edm": "EDM (continuous)", "flow": "flow, shift 3 (SD3)"}


def cells(rows: dict[str, Any], r: int) -> dict[str, float]:
    """Finite errors at exactly ``r`` counted rounds."""
    out = {}
    for name, row in rows.items():
        c = row.get(str(r))
        if c and c.get("rounds") == r and math.isfinite(c.get("error", math.nan)):
            out[name] = c["error"]
    return out


def best(errors: dict[str, float], epd: bool) -> tuple[str, float] | None:
    mine = {k: v for k, v in errors.items() if k.startswith("EPD") == epd and "distilled" not in k}
    if not mine:
        return None
    name = min(mine, key=mine.get)
    return name, mine[name]


def family_table(
    results: dict[str, Any], default_rows: tuple[str, str], earlier: tuple[str, str] | None = None
) -> list[str]:
    cfgs = results["cfgs"]
    base = cfgs.get("1.0", {}).get("rows", {})
    rounds = sorted({int(r) for row in base.values() for r in row})
    guided = [c for c in cfgs if c != "1.0"]
    head = [f"R={r}" for r in rounds] + [f"cfg {c}, R=5" for c in guided]
    lines = ["| row | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    columns = [("1.0", r) for r in rounds] + [(c, 5) for c in guided]
    peers = []
    for cfg, r in columns:
        errors = cells(cfgs[cfg]["rows"], r)
        peers.append((best(errors, False), errors))
    lines.append("| best built-in | " + " | ".join(_peer(p) for p, _ in peers) + " |")
    labelled = {"default": default_rows} | ({"earlier default": earlier} if earlier else {})
    names = [*labelled, "best EPD searched"] + sorted(
        {n for block in cfgs.values() for n in block["rows"] if "distilled" in n}
    )
    for name in names:
        out = []
        for (cfg, _), (peer, errors) in zip(columns, peers):
            if name in labelled:
                row = labelled[name][0] if cfg == "1.0" else labelled[name][1]
                out.append(_ratio(errors[row], peer) if row in errors else "-")
            elif name == "best EPD searched":
                found = best(errors, True)
                out.append(_ratio(found[1], peer) + f" ({found[0][4:]})" if found else "-")
            else:
                out.append(_ratio(errors[name], peer) if name in errors else "-")
        label = {
            "default": "EPD training-free default (node defaults)",
            "earlier default": "earlier default (plugin off)",
        }
        label = label.get(name, name)
        lines.append(f"| {label} | " + " | ".join(out) + " |")
    return lines


def fewer_rounds_lines(results: dict[str, Any], few: int = 3, many: int = 5) -> list[str]:
    """Each distilled row at ``few`` rounds against the best built-in at ``many`` (issue 14's "3 beats 5")."""
    errors_few, errors_many = (cells(results["cfgs"].get("1.0", {}).get("rows", {}), r) for r in (few, many))
    peer = best(errors_many, False)
    lines = []
    for name in sorted(n for n in errors_few if "distilled" in n):
        lines.append(f"- {name} at R={few}: {_ratio(errors_few[name], peer)} the best built-in at R={many}")
    return lines


def _peer(peer: tuple[str, float] | None) -> str:
    return "-" if peer is None else f"{peer[1]:.4f} ({peer[0]})"


def _ratio(error: float, peer: tuple[str, float] | None) -> str:
    return "-" if peer is None else f"{error / peer[1]:.2f}x"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("bench/results/families"))
    args = p.parse_args(argv)
    for family, default_rows in DEFAULT_ROWS.items():
        path = args.results / f"{family}.json"
        if not path.is_file():
            continue
        results = json.loads(path.read_text())
        for extra in sorted(args.results.glob(f"{family}_*.json")):  # distilled runs saved with --tag
            for cfg, block in json.loads(extra.read_text())["cfgs"].items():
                for name, row in block["rows"].items():
                    results["cfgs"].setdefault(cfg, {"rows": {}})["rows"].setdefault(name, {}).update(row)
        print(f"\n### {FAMILY_TITLES[family]}\n")  # noqa: T201 (the report)
        print("\n".join(family_table(results, default_rows, EARLIER_DEFAULT_ROWS.get(family))))  # noqa: T201
        if few := fewer_rounds_lines(results):
            print("\n" + "\n".join(few))  # noqa: T201


if __name__ == "__main__":
    main()
