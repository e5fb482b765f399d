"""Plot and tabulate the class-conditional Fashion-MNIST benchmark (issue 3).

    python -m bench.fmnist.plot_results

Merges the result JSONs of bench_distill (``--results``) and bench_fid (``--fid``), plus the
measures against the converged Heun-50 samples (``*converged*.json``: ``fd_converged`` and
``bench_fid --against converged``), writes a three-panel PNG (classifier FD to the test set,
reference error, classifier FD to the converged samples, against rounds) and prints a Markdown
table. Matplotlib is a bench-only dependency.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .rows import BUILTINS

RESULTS_DIR = Path("bench/results")
ORDER = (
    "EPD distilled",
    "EPD distilled, learned sigmas",
    "EPD distilled, Inception loss",
    "EPD-Plugin distilled",
    "EPD default",
    *BUILTINS,
)
METRICS = (
    ("fd", "classifier FD to the test set (log)"),
    ("ref_error", "L2 error to Heun-50 (log)"),
    ("fd_converged", "classifier FD to Heun-50's samples (log)"),
)


def merged_rows(paths: list[Path]) -> dict[str, dict[str, dict]]:
    """name -> rounds -> result, over every existing JSON (later files fill gaps only)."""
    rows: dict[str, dict[str, dict]] = {}
    for path in paths:
        if path.is_file():
            for name, per_r in json.loads(path.read_text())["rows"].items():
                for rounds, result in per_r.items():
                    rows.setdefault(name, {}).setdefault(rounds, result)
    return {name: rows[name] for name in sorted(rows, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))}


def add_converged(rows: dict[str, dict[str, dict]], paths: list[Path]) -> None:
    """Copy ``fd_converged`` from the converged-reference runs into ``rows`` (their other measures stay)."""
    for path in paths:
        for name, per_r in json.loads(path.read_text())["rows"].items():
            for rounds, result in per_r.items():
                if name in rows and rounds in rows[name] and "fd_converged" in result:
                    rows[name][rounds]["fd_converged"] = result["fd_converged"]


def fid_rows(paths: list[Path]) -> dict[str, dict[str, float]]:
    """name -> rounds -> FID over bench_fid's JSONs."""
    fid: dict[str, dict[str, float]] = {}
    for path in paths:
        for name, per_r in json.loads(path.read_text())["rows"].items():
            fid.setdefault(name, {}).update(per_r)
    return fid


def plot(rows: dict[str, dict[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on the bench machine
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for ax, (key, label) in zip(axes, METRICS):
        for index, (name, per_r) in enumerate(rows.items()):
            budgets = sorted(int(r) for r in per_r if key in per_r[r])
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


def _pair(values: dict, key: str | None = None) -> str:
    """'a / b' of the R = 3 and R = 5 entries ('-' where missing)."""
    cells = []
    for r in ("3", "5"):
        value = values.get(r, {}).get(key) if key else values.get(r)
        cells.append("-" if value is None else f"{value:.1f}")
    return " / ".join(cells)


def table(rows: dict[str, dict[str, dict]], fid: dict[str, dict[str, float]], fid_converged: dict) -> str:
    """Markdown: classifier FD / reference error per budget, then the R = 3 / R = 5 measures where taken."""
    budgets = sorted({int(r) for per_r in rows.values() for r in per_r})
    head = "| solver | " + " | ".join(f"R={r}" for r in budgets)
    head += " | FID R=3 / R=5 | FD to converged R=3 / R=5 | FID to converged R=3 / R=5 |"
    lines = [head, "|---" * (len(budgets) + 4) + "|"]
    for name, per_r in rows.items():
        cells = [f"{per_r[str(r)]['fd']:.1f} / {per_r[str(r)]['ref_error']:.2f}" if str(r) in per_r else "-"
                 for r in budgets]  # fmt: skip
        extra = [_pair(fid.get(name, {})), _pair(per_r, "fd_converged"), _pair(fid_converged.get(name, {}))]
        lines.append(f"| {name} | " + " | ".join(cells + extra) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, nargs="*", default=None, help="default: every fmnist_cond_*.json")
    p.add_argument("--fid", type=Path, nargs="*", default=None, help="default: every fmnist_cond_fid*.json")
    p.add_argument("--png", type=Path, default=Path("bench/results/fmnist_cond.png"))
    args = p.parse_args(argv)
    converged = set(RESULTS_DIR.glob("fmnist_cond_*converged*.json"))
    fid_paths = args.fid or sorted(set(RESULTS_DIR.glob("fmnist_cond_fid*.json")) - converged)
    paths = args.results or sorted(set(RESULTS_DIR.glob("fmnist_cond_*.json")) - set(fid_paths) - converged)
    rows = merged_rows(paths)
    fid_converged_paths = sorted(p for p in converged if p.name.startswith("fmnist_cond_fid"))
    add_converged(rows, sorted(converged - set(fid_converged_paths)))
    plot(rows, args.png)
    sys.stdout.write(table(rows, fid_rows(fid_paths), fid_rows(fid_converged_paths)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
