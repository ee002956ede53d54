"""``accelab compare``: two sweeps' frontiers side by side (the same sweep on CPU and GPU,
or before and after a change), and one plot with both."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from mlflow.tracking import MlflowClient

from accelab.commands.report import sweep_of
from accelab.errors import UsageError
from accelab.sweep.plot import plot_compare
from accelab.sweep.summary import find_parent, summarize, targets_of
from accelab.sweep.table import fmt_drop, fmt_speedup, recommendation_line
from accelab.tracking.client import tracking_store


def find(client, ref: str):
    """A sweep parent run: its run id, or an experiment name (its newest sweep)."""
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        return sweep_of(client, ref, "SWEEP")
    return find_parent(client, ref)


def check_target(parents: list, target: str | None) -> None:
    """``--target`` is a target key both sweeps measured."""
    for p in parents if target else []:
        keys = [key for key, _ in targets_of(p)]
        if target not in keys:
            raise UsageError(
                f"--target {target}: sweep {p.info.run_name} ({p.info.run_id[:8]}) measured "
                f"no such target; its targets are {', '.join(keys)}"
            )


def lines_of(s, title: str) -> list[str]:
    rows = [r for r in s.rows if r.on_front]
    out = [f"{title}: target {s.target[1]}, noise floor {s.noise:.0%}, frontier ({len(rows)}):"]
    out += [f"  {r.trial_id:<12} {r.name:<28} {r.backend:<22} {s.metric.name} "
            f"{r.q:.4f} drop {fmt_drop(s, r.q_drop)} speedup {fmt_speedup(r)}" for r in rows]  # fmt: skip
    return out + ["  " + recommendation_line(s)]


def compare(
    refs: list[str], tracking_uri: str | None, out: str, target: str | None,
    echo: Callable[[str], None] = print,
) -> Path:  # fmt: skip
    client = MlflowClient(tracking_store(tracking_uri, "--tracking-uri", must_exist=True))
    parents = [find(client, ref) for ref in refs]
    check_target(parents, target)
    summaries = [summarize(client, p, target) for p in parents]
    titles = [f"{p.info.run_name} ({p.info.run_id[:8]})" for p in parents]
    for s, title in zip(summaries, titles, strict=True):
        echo("\n".join(lines_of(s, title)))
    speeds = [s.recommended.speedup if s.recommended else None for s in summaries]
    echo(
        "recommended speedups: " + " vs ".join("none" if v is None else f"{v:.2f}x" for v in speeds)
    )
    path = Path(out).expanduser().resolve()
    plot_compare(summaries, titles, path)
    echo(f"wrote {path}")
    return path
