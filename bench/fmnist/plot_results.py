"""Plot and tabulate the class-conditional Fashion-MNIST benchmark (issue 3).

    python -m bench.fmnist.plot_results

Merges the result JSONs of bench_distill (``--results``) and bench_fid (``--fid``), writes a
two-panel PNG (classifier FD and reference error against rounds) and prints a Markdown table.
Matplotlib is a bench-only dependency.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .rows import BUILTINS

RESULTS_DIR = Path("bench/results")
ORDER = ("EPD distilled", "EPD-Plugin distilled", "EPD default", *BUILTINS)
METRICS = (("fd", "classifier-feature FD (log)"), ("ref_error", "L2 error to Heun-50 (log)"))


def merged_rows(paths: list[Path]) -> dict[str, dict[str, dict]]:
    """name -> rounds -> result, over every existing JSON (later files fill gaps only)."""
    rows: dict[str, dict[str, dict]] = {}
    for path in paths:
        if path.is_file():
            for name, per_r in json.loads(path.read_text())["rows"].items():
                for rounds, result in per_r.items():
                    rows.setdefault(name, {}).setdefault(rounds, result)
    return {name: rows[name] for name in sorted(rows, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))}


def plot(rows: dict[str, dict[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on the bench machine
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, label) in zip(axes, METRICS):
        for index, (name, per_r) in enumerate(rows.items()):
            budgets = sorted(int(r) for r in per_r)
            style = "-o" if name.startswith("EPD") else "--."
            width = 2.5 if "distilled" in name else 1.2
            color = plt.cm.tab20(index % 20)  # tab10 has fewer colours than rows
            ax.plot(budgets, [per_r[str(r)][key] for r in budgets], style, lw=width, color=color, label=name)
        ax.set(xlabel="sequential model rounds R", ylabel=label, yscale="log", xticks=[3, 5, 7, 9])
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("Fashion-MNIST EDM UNet, class-conditional (cfg 1), same noise for every solver")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(rows: dict[str, dict[str, dict]], fid: dict[str, dict[str, float]]) -> str:
    """Markdown: classifier FD / reference error per budget, Inception FID at 3 and 5 where measured."""
    budgets = sorted({int(r) for per_r in rows.values() for r in per_r})
    head = "| solver | " + " | ".join(f"R={r}" for r in budgets) + " | FID R=3 / R=5 |"
    lines = [head, "|---" * (len(budgets) + 2) + "|"]
    for name, per_r in rows.items():
        cells = [f"{per_r[str(r)]['fd']:.1f} / {per_r[str(r)]['ref_error']:.2f}" if str(r) in per_r else "-"
                 for r in budgets]  # fmt: skip
        scores = [f"{fid[name][r]:.1f}" if r in fid.get(name, {}) else "-" for r in ("3", "5")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {' / '.join(scores)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, nargs="*", default=None, help="default: every fmnist_cond_*.json")
    p.add_argument("--fid", type=Path, nargs="*", default=None, help="default: every fmnist_cond_fid*.json")
    p.add_argument("--png", type=Path, default=Path("bench/results/fmnist_cond.png"))
    args = p.parse_args(argv)
    fid_paths = args.fid or sorted(RESULTS_DIR.glob("fmnist_cond_fid*.json"))
    paths = args.results or sorted(set(RESULTS_DIR.glob("fmnist_cond_*.json")) - set(fid_paths))
    rows = merged_rows(paths)
    fid: dict[str, dict[str, float]] = {}
    for path in fid_paths:
        for name, per_r in json.loads(path.read_text())["rows"].items():
            fid.setdefault(name, {}).update(per_r)
    plot(rows, args.png)
    sys.stdout.write(table(rows, fid) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
