"""Markdown tables and the log-scale plot of the exact-denoiser benchmark.

``results`` is the JSON written by bench_exact.py: settings -> rows -> str(R) ->
{"error", "rounds", "evals"}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "nan"
    if value == float("inf") or abs(value) >= 1e4:
        return "diverged"
    return f"{value:.3g}" if value >= 1e-3 else f"{value:.2e}"


def error_table(setting: dict[str, Any], rounds: list[int]) -> str:
    """One setting: a row per solver, a column per round budget; best per column in bold."""
    head = "| solver | " + " | ".join(f"R={r}" for r in rounds) + " |"
    lines = [head, "|---|" + "---:|" * len(rounds)]
    best = {r: min(row[str(r)]["error"] for row in setting["rows"].values()) for r in rounds}
    for name, row in setting["rows"].items():
        cells = []
        for r in rounds:
            err, text = row[str(r)]["error"], _fmt(row[str(r)]["error"])
            cells.append(f"**{text}**" if err == best[r] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compute_table(setting: dict[str, Any], rounds: list[int]) -> str:
    """Measured sequential rounds / point evaluations (counting K) per solver and budget."""
    lines = [
        "| solver | " + " | ".join(f"R={r}: rounds / evals" for r in rounds) + " |",
        "|---|" + "---:|" * len(rounds),
    ]
    for name, row in setting["rows"].items():
        cells = [f"{row[str(r)]['rounds']} / {row[str(r)]['evals']:g}" for r in rounds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_eval_table(setting: dict[str, Any], rounds: list[int]) -> str:
    """error x point evaluations: lower is better per unit of compute (EPD pays K evaluations per round)."""
    lines = ["| solver | " + " | ".join(f"R={r}" for r in rounds) + " |", "|---|" + "---:|" * len(rounds)]
    for name, row in setting["rows"].items():
        cells = [_fmt(row[str(r)]["error"] * row[str(r)]["evals"]) for r in rounds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """All tables of a results dict."""
    rounds = results["meta"]["rounds"]
    parts = []
    for key, setting in results["settings"].items():
        parts.append(
            f"\n### {key}: {setting['title']}\n\nError vs the converged reference (mean L2 over 64 pixels), at R sequential model rounds:\n"
        )
        parts.append(error_table(setting, rounds))
        parts.append("\nerror x point evaluations (compute-honest):\n")
        parts.append(per_eval_table(setting, rounds))
    first = next(iter(results["settings"].values()))
    parts.append("\n### Compute per run (measured: sequential rounds / point evaluations, counting K)\n")
    parts.append(compute_table(first, rounds))
    return "\n".join(parts) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Log-scale error vs rounds (top) and vs point evaluations (bottom), one column per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = results["settings"]
    rounds = results["meta"]["rounds"]
    fig, axes = plt.subplots(2, len(settings), figsize=(4.2 * len(settings), 7.5), squeeze=False)
    for col, (key, setting) in enumerate(settings.items()):
        for index, (name, row) in enumerate(setting["rows"].items()):
            style = {"lw": 2.4, "marker": "o"} if name.startswith("EPD") else {"lw": 1.0, "marker": ".", "alpha": 0.8}
            style["color"] = plt.get_cmap("tab20")(index % 20)
            errs = [min(row[str(r)]["error"], 1e3) for r in rounds]
            axes[0, col].plot(rounds, errs, label=name, **style)
            axes[1, col].plot([row[str(r)]["evals"] for r in rounds], errs, **style)
        axes[0, col].set_title(key, fontsize=10)
        axes[0, col].set_xlabel("sequential model rounds")
        axes[1, col].set_xlabel("point evaluations (counting K)")
        for ax in axes[:, col]:
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("error vs reference")
    axes[1, 0].set_ylabel("error vs reference")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=7, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
