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
    ("relative_latency", "on_front",
     "latency relative to the dense model timed alongside (1/speedup; bars: min-max over rounds)",
     "quality vs latency (lower is faster)"),
    ("size_mb", "on_size_front", "model size (MB, on disk)", "quality vs size"),
)  # fmt: skip


def with_relative_latency(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each trial's latency as a fraction of its own dense baseline (the speedups' inverse):
    absolute latencies measured at different moments of a shared machine do not compare."""
    out = []
    for r in rows:
        r = dict(r)
        s = r.get("speedup")
        r["relative_latency"] = 1 / s if s else None
        r["relative_latency_lo"] = 1 / r["speedup_hi"] if r.get("speedup_hi") else None
        r["relative_latency_hi"] = 1 / r["speedup_lo"] if r.get("speedup_lo") else None
        out.append(r)
    return out


OFFSETS = ((6, 6), (6, -12), (-60, 6), (-60, -12))  # label positions, cycled for neighbours


def yerr(rows: list[dict[str, Any]]) -> list[list[float]]:
    return [[r["q"] - (r["q_lo"] if r["q_lo"] is not None else r["q"]) for r in rows],
            [(r["q_hi"] if r["q_hi"] is not None else r["q"]) - r["q"] for r in rows]]  # fmt: skip


def xerr(rows: list[dict[str, Any]], key: str) -> list[list[float]] | None:
    if key not in ("relative_latency", "latency_p50_ms"):
        return None
    lo = [r[key] - (r.get(f"{key}_lo") or r[key]) for r in rows]
    hi = [(r.get(f"{key}_hi") or r[key]) - r[key] for r in rows]
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
    ok = [r for r in with_relative_latency(s.rows) if r["status"] == "ok" and r["q"] is not None]
    measured = [r for r in ok if not r["simulated"] and r[key] is not None]
    simulated = [r for r in ok if r["simulated"]]
    base, name = s.baseline, s.metric.name
    if measured:
        xs = [r[key] for r in measured]
        ax.errorbar(xs, [r["q"] for r in measured], yerr=yerr(measured), xerr=xerr(measured, key),
                    fmt="o", ms=7, alpha=0.8, capsize=3, zorder=3, label="measured trial")  # fmt: skip
        label(ax, measured, xs)
    if simulated:
        if key == "relative_latency":  # no latency: an "n/a" column right of the measured points
            na_x = max([r[key] for r in measured] + [1.0]) * 1.3
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
    base_x = 1.0 if key == "relative_latency" else base.get(key)
    if name in base and base_x is not None:
        lo, hi = base.get(f"{name}_lo", base[name]), base.get(f"{name}_hi", base[name])
        ax.errorbar([base_x], [base[name]], yerr=[[base[name] - lo], [hi - base[name]]],
                    fmt="s", c="k", mfc="none", mew=2, ms=11, capsize=3, zorder=1,
                    label="dense fp32 baseline")  # fmt: skip
    if name in base and not s.metric.relative_drop:
        limit = s.constraints.max_accuracy_drop
        floor = base[name] - limit if s.metric.higher_is_better else base[name] + limit
        ax.axhline(floor, ls="--", c="gray", lw=1, label=f"constraint ({limit:g} drop)")
    rec = next((r for r in ok if r["recommended"]), None)
    if rec and rec[key] is not None and not rec["simulated"]:
        r = rec
        ax.scatter([r[key]], [r["q"]], marker="*", s=500, c="gold", edgecolors="k", zorder=5,
                   label=f"recommended: {r.get('name') or r['trial_id']}")  # fmt: skip
    ax.set(xlabel=xlabel, ylabel=f"test {name} (95% CI)", title=title)
    if key == "relative_latency":
        from matplotlib.ticker import FormatStrFormatter

        ax.set_xscale("log")
        for axis in (ax.xaxis,):
            axis.set_major_formatter(FormatStrFormatter("%.2g"))
            axis.set_minor_formatter(FormatStrFormatter("%.2g"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)


def plot_pareto(s: SweepSummary, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(16, 8))
    for ax, panel in zip(axes, PANELS, strict=True):
        draw_panel(ax, s, *panel)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_compare(summaries: list[SweepSummary], titles: list[str], path: Path) -> None:
    """Both sweeps' measured trials and frontiers on one quality-vs-latency panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 7))
    styles = [("tab:blue", "o"), ("tab:orange", "s"), ("tab:green", "^"), ("tab:red", "D")]
    for i, (s, title) in enumerate(zip(summaries, titles, strict=True)):
        color, marker = styles[i % len(styles)]
        rows = [
            r for r in s.rows if r["status"] == "ok" and not r["simulated"] and r["latency_p50_ms"]
        ]
        ax.errorbar([r["latency_p50_ms"] for r in rows], [r["q"] for r in rows], yerr=yerr(rows),
                    xerr=xerr(rows, "latency_p50_ms"), fmt=marker, color=color, alpha=0.7, capsize=3,
                    label=f"{title}: trials")  # fmt: skip
        front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["latency_p50_ms"])
        ax.plot([r["latency_p50_ms"] for r in front], [r["q"] for r in front], "-", color=color, lw=2.5,
                label=f"{title}: frontier ({s.target[1]})")  # fmt: skip
        if s.recommended and s.recommended["latency_p50_ms"]:
            r = s.recommended
            ax.scatter([r["latency_p50_ms"]], [r["q"]], marker="*", s=400, color=color, edgecolors="k",
                       zorder=5, label=f"{title}: recommended")  # fmt: skip
    ax.set(xlabel="latency p50 (ms, measured)", ylabel=f"test {summaries[0].metric.name} (95% CI)",
           title="frontiers compared", xscale="log")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
