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

from accelab.sweep.summary import SweepSummary, TrialRow

# matplotlib is imported where a figure is drawn: the Agg backend has to be chosen before
# pyplot is first imported (a process-wide choice), and ``accelab report`` without a plot
# skips it (measured on a busy 2-core machine: 0.5 s for matplotlib + pyplot).

PANELS = (
    ("relative_latency", "on_front",
     "latency relative to the dense model timed alongside (1/speedup; bars: 95% CI of the median block ratio)",
     "quality vs latency (lower is faster)"),
    ("size_mb", "on_size_front", "model size (MB, on disk)", "quality vs size"),
)  # fmt: skip


def x_of(r: TrialRow, key: str) -> tuple[float | None, float | None, float | None]:
    """(x, lo, hi) of a row on a panel. ``relative_latency`` is the trial's latency as a
    fraction of its own dense baseline (1/speedup, bars from the speedup's interval): the
    same number the frontier and the recommendation use; absolute latencies measured at
    different moments of a shared machine do not compare."""
    if key == "relative_latency":
        inv = [1 / v if v else None for v in (r.speedup, r.speedup_hi, r.speedup_lo)]
        return inv[0], inv[1], inv[2]
    if key == "latency_p50_ms":
        return r.latency_p50_ms, r.latency_p50_ms_lo, r.latency_p50_ms_hi
    return getattr(r, key), None, None


OFFSETS = ((6, 6), (6, -12), (-60, 6), (-60, -12))  # label positions, cycled for neighbours


def yerr(rows: list[TrialRow]) -> list[list[float]]:
    return [[r.q - (r.q_lo if r.q_lo is not None else r.q) for r in rows],
            [(r.q_hi if r.q_hi is not None else r.q) - r.q for r in rows]]  # fmt: skip


def xerr(rows: list[TrialRow], key: str) -> list[list[float]]:
    spans = [x_of(r, key) for r in rows]
    return [[x - (lo if lo is not None else x) for x, lo, _ in spans],
            [(hi if hi is not None else x) - x for x, _, hi in spans]]  # fmt: skip


def label(ax, rows: list[TrialRow], xs: list[float]) -> None:
    seen: dict[tuple[float, float], int] = {}
    for r, x in zip(rows, xs, strict=True):
        spot = (round(x, 3), round(r.q, 4))
        offset = OFFSETS[seen.get(spot, 0) % len(OFFSETS)]
        seen[spot] = seen.get(spot, 0) + 1
        ax.annotate(r.name or r.trial_id, (x, r.q), textcoords="offset points",
                    xytext=offset, fontsize=7)  # fmt: skip


def draw_panel(ax, s: SweepSummary, key: str, front_flag: str, xlabel: str, title: str) -> None:
    ok = [r for r in s.rows if r.status == "ok" and r.q is not None]
    measured = [r for r in ok if not r.simulated and x_of(r, key)[0] is not None]
    simulated = [r for r in ok if r.simulated]
    base, name = s.baseline, s.metric.name
    xs_measured = [x_of(r, key)[0] for r in measured]
    if measured:
        xs = xs_measured
        ax.errorbar(xs, [r.q for r in measured], yerr=yerr(measured), xerr=xerr(measured, key),
                    fmt="o", ms=7, alpha=0.8, capsize=3, zorder=3, label="measured trial")  # fmt: skip
        label(ax, measured, xs)
    if simulated:
        if key == "relative_latency":  # no latency: an "n/a" column right of the measured points
            na_x = max(xs_measured + [1.0]) * 1.3
            xs, what = [na_x] * len(simulated), "simulated (latency n/a)"
        else:
            xs, what = (
                [r.packed_size_mb or x_of(r, key)[0] for r in simulated],
                "simulated (packed size, computed)",
            )
        ax.errorbar(xs, [r.q for r in simulated], yerr=yerr(simulated), fmt="o", mfc="none",
                    mec="gray", ecolor="gray", ms=7, capsize=3, label=what)  # fmt: skip
        label(ax, simulated, xs)
    front = sorted((r for r in measured if getattr(r, front_flag)), key=lambda r: x_of(r, key)[0])
    if front:
        ax.plot([x_of(r, key)[0] for r in front], [r.q for r in front], "r-", lw=2.5, alpha=0.7,
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
    rec = next((r for r in ok if r.recommended), None)
    if rec and x_of(rec, key)[0] is not None and not rec.simulated:
        r = rec
        ax.scatter([x_of(r, key)[0]], [r.q], marker="*", s=500, c="gold", edgecolors="k", zorder=5,
                   label=f"recommended: {r.name or r.trial_id}")  # fmt: skip
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
        rows = [r for r in s.rows if r.status == "ok" and not r.simulated and r.latency_p50_ms]
        ax.errorbar([r.latency_p50_ms for r in rows], [r.q for r in rows], yerr=yerr(rows),
                    xerr=xerr(rows, "latency_p50_ms"), fmt=marker, color=color, alpha=0.7, capsize=3,
                    label=f"{title}: trials")  # fmt: skip
        front = sorted((r for r in rows if r.on_front), key=lambda r: r.latency_p50_ms)
        ax.plot([r.latency_p50_ms for r in front], [r.q for r in front], "-", color=color, lw=2.5,
                label=f"{title}: frontier ({s.target[1]})")  # fmt: skip
        if s.recommended and s.recommended.latency_p50_ms:
            r = s.recommended
            ax.scatter([r.latency_p50_ms], [r.q], marker="*", s=400, color=color, edgecolors="k",
                       zorder=5, label=f"{title}: recommended")  # fmt: skip
    ax.set(xlabel="latency p50 (ms, measured)", ylabel=f"test {summaries[0].metric.name} (95% CI)",
           title="frontiers compared", xscale="log")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
