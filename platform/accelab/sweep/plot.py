"""pareto.png: accuracy vs measured latency (left) and vs size (right).

Frontier points are joined, the recommendation is a star, simulated trials (no real
low-bit kernel) are hollow and, having no latency, sit in an "n/a" column on the left.
"""

from __future__ import annotations

from pathlib import Path

from accelab.sweep.summary import SweepSummary

PANELS = (
    ("latency_p50_ms", "on_front", "latency p50 (ms, measured)", "accuracy vs latency"),
    ("size_mb", "on_size_front", "model size (MB)", "accuracy vs size"),
)


def draw_panel(ax, s: SweepSummary, key: str, front_flag: str, xlabel: str, title: str) -> None:
    ok = [r for r in s.rows if r["status"] == "ok" and r["accuracy"] is not None]
    measured = [r for r in ok if not r["simulated"] and r[key] is not None]
    simulated = [r for r in ok if r["simulated"]]
    base = s.baseline
    ax.scatter(
        [r[key] for r in measured], [r["accuracy"] for r in measured], label="measured trial"
    )
    if simulated:
        if key == "latency_p50_ms":  # no latency: an "n/a" column right of the measured points
            na_x = max([r[key] for r in measured] + [base.get(key, 1.0)]) * 1.15
            xs, label = [na_x] * len(simulated), "simulated (latency n/a)"
        else:
            xs, label = [r[key] for r in simulated], "simulated (packed size)"
        ax.scatter(
            xs,
            [r["accuracy"] for r in simulated],
            facecolors="none",
            edgecolors="gray",
            label=label,
        )
    front = sorted((r for r in ok if r[front_flag] and r[key] is not None), key=lambda r: r[key])
    ax.plot([r[key] for r in front], [r["accuracy"] for r in front], "r-o", label="Pareto frontier")
    if "accuracy" in base:
        if key in base:
            ax.scatter(
                [base[key]], [base["accuracy"]], marker="s", c="k", label="dense fp32 baseline"
            )
        floor = base["accuracy"] - s.constraints.max_accuracy_drop
        ax.axhline(floor, ls="--", c="gray", lw=0.8, label="accuracy constraint")
    if s.recommended:
        r = s.recommended
        ax.scatter([r[key]], [r["accuracy"]], marker="*", s=300, c="gold", edgecolors="k", zorder=5,
                   label=f"recommended ({r['trial_id']})")  # fmt: skip
    ax.set(xlabel=xlabel, ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def plot_pareto(s: SweepSummary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(12, 5))
    for ax, panel in zip(axes, PANELS, strict=True):
        draw_panel(ax, s, *panel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
