"""pareto.png: test quality vs measured latency (left) and vs size (right).

Readable at a glance: every point carries its 95% quality interval (vertical bar) and
its latency spread over rounds (horizontal bar) and is labelled with its short name;
the frontier is a thick line, the recommendation a large star, the dense baseline a black
square with its interval and the constraint a dashed line. Simulated trials (no real
low-bit kernel) are hollow grey: in an "n/a" column on the latency panel and at their
computed packed size on the size panel, never on a frontier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accelab.sweep.summary import SweepSummary

PANELS = (
    ("latency_p50_ms", "on_front", "latency p50 (ms, measured; bars: min-max over rounds)",
     "quality vs latency"),
    ("size_mb", "on_size_front", "model size (MB, on disk)", "quality vs size"),
)  # fmt: skip
OFFSETS = ((6, 6), (6, -12), (-60, 6), (-60, -12))  # label positions, cycled for neighbours


def yerr(rows: list[dict[str, Any]]) -> list[list[float]]:
    return [[r["q"] - (r["q_lo"] if r["q_lo"] is not None else r["q"]) for r in rows],
            [(r["q_hi"] if r["q_hi"] is not None else r["q"]) - r["q"] for r in rows]]  # fmt: skip


def xerr(rows: list[dict[str, Any]], key: str) -> list[list[float]] | None:
    if key != "latency_p50_ms":
        return None
    lo = [r[key] - (r.get("latency_p50_ms_lo") or r[key]) for r in rows]
    hi = [(r.get("latency_p50_ms_hi") or r[key]) - r[key] for r in rows]
    return [lo, hi]


def label(ax, rows: list[dict[str, Any]], xs: list[float]) -> None:
    seen: dict[tuple[float, float], int] = {}
    for r, x in zip(rows, xs, strict=True):
        spot = (round(x, 3), round(r["q"], 4))
        offset = OFFSETS[seen.get(spot, 0) % len(OFFSETS)]
        seen[spot] = seen.get(spot, 0) + 1
        ax.annotate(r.get("name") or r["trial_id"], (x, r["q"]), textcoords="offset points",
                    xytext=offset, fontsize=7)  # fmt: skip


def draw_panel(ax, s: SweepSummary, key: str, front_flag: str, xlabel: str, title: str) -> None:
    ok = [r for r in s.rows if r["status"] == "ok" and r["q"] is not None]
    measured = [r for r in ok if not r["simulated"] and r[key] is not None]
    simulated = [r for r in ok if r["simulated"]]
    base, name = s.baseline, s.metric.name
    if measured:
        xs = [r[key] for r in measured]
        ax.errorbar(xs, [r["q"] for r in measured], yerr=yerr(measured), xerr=xerr(measured, key),
                    fmt="o", ms=7, alpha=0.8, capsize=3, label="measured trial")  # fmt: skip
        label(ax, measured, xs)
    if simulated:
        if key == "latency_p50_ms":  # no latency: an "n/a" column right of the measured points
            na_x = max([r[key] for r in measured] + [base.get(key, 1.0)]) * 1.2
            xs, what = [na_x] * len(simulated), "simulated (latency n/a)"
        else:
            xs, what = (
                [r["packed_size_mb"] or r[key] for r in simulated],
                "simulated (packed size, computed)",
            )
        ax.errorbar(xs, [r["q"] for r in simulated], yerr=yerr(simulated), fmt="o", mfc="none",
                    mec="gray", ecolor="gray", ms=7, capsize=3, label=what)  # fmt: skip
        label(ax, simulated, xs)
    front = sorted((r for r in measured if r[front_flag]), key=lambda r: r[key])
    if front:
        ax.plot([r[key] for r in front], [r["q"] for r in front], "r-", lw=2.5, alpha=0.7,
                label="Pareto frontier", zorder=1)  # fmt: skip
    if name in base and key in base:
        lo, hi = base.get(f"{name}_lo", base[name]), base.get(f"{name}_hi", base[name])
        ax.errorbar([base[key]], [base[name]], yerr=[[base[name] - lo], [hi - base[name]]],
                    fmt="s", c="k", ms=8, capsize=3, label="dense fp32 baseline")  # fmt: skip
    if name in base and not s.metric.relative_drop:
        limit = s.constraints.max_accuracy_drop
        floor = base[name] - limit if s.metric.higher_is_better else base[name] + limit
        ax.axhline(floor, ls="--", c="gray", lw=1, label=f"constraint ({limit:g} drop)")
    if s.recommended and s.recommended[key] is not None and not s.recommended["simulated"]:
        r = s.recommended
        ax.scatter([r[key]], [r["q"]], marker="*", s=500, c="gold", edgecolors="k", zorder=5,
                   label=f"recommended: {r.get('name') or r['trial_id']}")  # fmt: skip
    ax.set(xlabel=xlabel, ylabel=f"test {name} (95% CI)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def plot_pareto(s: SweepSummary, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(16, 7))
    for ax, panel in zip(axes, PANELS, strict=True):
        draw_panel(ax, s, *panel)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
