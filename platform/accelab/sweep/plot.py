"""pareto.png: accuracy vs measured latency (left) and vs size (right).

Frontier points are joined, the recommendation is a star, simulated trials (no real
low-bit kernel) are hollow and, having no latency, sit in an "n/a" column on the left.
"""

from __future__ import annotations

from pathlib import Path

from accelab.sweep.summary import SweepSummary


def plot_pareto(s: SweepSummary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_size) = plt.subplots(1, 2, figsize=(12, 5))
    ok = [r for r in s.rows if r["status"] == "ok" and r["accuracy"] is not None]
    measured = [r for r in ok if not r["simulated"] and r["latency_p50_ms"] is not None]
    simulated = [r for r in ok if r["simulated"]]
    base = s.baseline

    ax_lat.scatter(
        [r["latency_p50_ms"] for r in measured],
        [r["accuracy"] for r in measured],
        label="measured trial",
    )
    na_x = max([r["latency_p50_ms"] for r in measured] + [base.get("latency_p50_ms", 1.0)]) * 1.15
    if simulated:
        ax_lat.scatter([na_x] * len(simulated), [r["accuracy"] for r in simulated], facecolors="none",
                       edgecolors="gray", label="simulated (latency n/a)")  # fmt: skip
    front = sorted((r for r in measured if r["on_front"]), key=lambda r: r["latency_p50_ms"])
    ax_lat.plot(
        [r["latency_p50_ms"] for r in front],
        [r["accuracy"] for r in front],
        "r-o",
        label="Pareto frontier",
    )
    ax_size.scatter(
        [r["size_mb"] for r in measured], [r["accuracy"] for r in measured], label="measured trial"
    )
    ax_size.scatter([r["size_mb"] for r in simulated], [r["accuracy"] for r in simulated], facecolors="none",
                    edgecolors="gray", label="simulated (packed size)")  # fmt: skip
    sfront = sorted((r for r in ok if r["on_size_front"]), key=lambda r: r["size_mb"])
    ax_size.plot(
        [r["size_mb"] for r in sfront],
        [r["accuracy"] for r in sfront],
        "r-o",
        label="Pareto frontier",
    )

    if "accuracy" in base:
        for ax, key in ((ax_lat, "latency_p50_ms"), (ax_size, "size_mb")):
            if key in base:
                ax.scatter(
                    [base[key]], [base["accuracy"]], marker="s", c="k", label="dense fp32 baseline"
                )
            floor = base["accuracy"] - s.constraints.max_accuracy_drop
            ax.axhline(floor, ls="--", c="gray", lw=0.8, label="accuracy constraint")
    if s.recommended:
        r = s.recommended
        ax_lat.scatter([r["latency_p50_ms"]], [r["accuracy"]], marker="*", s=300, c="gold", edgecolors="k",
                       zorder=5, label=f"recommended ({r['trial_id']})")  # fmt: skip
        ax_size.scatter(
            [r["size_mb"]], [r["accuracy"]], marker="*", s=300, c="gold", edgecolors="k", zorder=5
        )
    ax_lat.set(
        xlabel="latency p50 (ms, measured)", ylabel="test accuracy", title="accuracy vs latency"
    )
    ax_size.set(xlabel="model size (MB)", ylabel="test accuracy", title="accuracy vs size")
    for ax in (ax_lat, ax_size):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
