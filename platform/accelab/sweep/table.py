"""The sweep's table, recommendation line and ``pareto.csv`` (from a ``SweepSummary``).

Every number with a spread shows it: the quality drop with its paired 95% interval, the
speedup (median of paired block ratios) with its 95% interval. Each row's speedup is
against the baseline latency in its own ``base ms`` column (measured alongside it), not against the header's A/A one.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from accelab.measure import quality
from accelab.sweep.summary import SweepSummary, TrialRow
from accelab.tracking import names


def short(value: str) -> str:
    """'0.47440675196366233' -> '0.4744' for display; other values unchanged."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return value if number.is_integer() or len(value) <= 6 else f"{number:.4g}"


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def drop_unit(s: SweepSummary) -> tuple[float, str]:
    """Drops print as points (x100) for a proportion and as percent for a relative drop."""
    return 100.0, quality.drop_unit(s.metric.relative_drop)


def fmt_drop(s: SweepSummary, value, lo=None, hi=None) -> str:
    return quality.format_drop(value, lo, hi, s.metric.relative_drop)


def fmt_speedup(r: TrialRow) -> str:
    if r.simulated:
        return "n/a (simulated)"
    if r.speedup is None:
        return "n/a"
    text = f"{r.speedup:.2f}x"
    if r.speedup_lo is not None and r.speedup_hi is not None:
        text += f" ({r.speedup_lo:.2f}-{r.speedup_hi:.2f})"
    return text


def mark(r: TrialRow) -> str:
    """``*`` recommended, then ``F`` / ``S`` where it is on a frontier too (``*F``): the
    recommendation's mark never hides where the trial stands."""
    front = "F" if r.on_front else ("S" if r.on_size_front else "")
    return ("*" if r.recommended else "") + front


def header_lines(s: SweepSummary) -> list[str]:
    b, name = s.baseline, s.metric.name
    lines = [
        f"target: {s.target[1]} (speedups against the dense model on this runtime)",
        f"baseline (dense torch-fp32): test {name} {_fmt(b.get(name))} "
        f"[{_fmt(b.get(names.lo(name)))}, {_fmt(b.get(names.hi(name)))}] on "
        f"{int(b.get(names.M_N_TEST, 0))} examples, "
        f"p50 {_fmt(b.get(names.M_LATENCY_P50_MS), '.3f')} ms "
        f"(A/A control), size {_fmt(b.get(names.M_SIZE_MB), '.3f')} MB",
    ]
    aa = names.M_AA_SPEEDUP
    if aa in b:
        lines.append(
            f"noise floor: the dense model timed against itself read {b[aa]:.2f}x "
            f"({b.get(names.lo(aa), 0):.2f}-{b.get(names.hi(aa), 0):.2f}); speedups within "
            f"{s.noise:.0%} of each other count as a tie, in the frontier (F) and the "
            "recommendation (*) alike; among tied trials the smaller validation drop wins, then "
            "the smaller size, then the higher speedup"
        )
    return lines


def format_table(s: SweepSummary) -> str:
    """The frontier table and the recommendation, as printed at the end of a sweep."""
    scale_unit = drop_unit(s)[1]
    head = ["trial", *(k.split(".")[-1] for k in s.searched), "backend", s.metric.name,
            f"drop {scale_unit} [95% CI]", "val drop", "p50 ms", "base ms", "speedup [95% CI]",
            "vs torch", "size MB", "packed MB", "front", "status"]  # fmt: skip
    lines = []
    for r in s.rows:
        lines.append([
            r.trial_id, *(short(str(r.searched.get(k, ""))) for k in s.searched), r.backend,
            _fmt(r.q), fmt_drop(s, r.q_drop, r.q_drop_lo, r.q_drop_hi),
            fmt_drop(s, r.val_q_drop), _fmt(r.latency_p50_ms, ".3f"),
            _fmt(r.baseline_latency_p50_ms, ".3f"), fmt_speedup(r),
            "" if r.speedup_vs_torch is None else f"{r.speedup_vs_torch:.2f}x",
            _fmt(r.size_mb, ".3f"),
            _fmt(r.packed_size_mb, ".3f") if r.simulated else "", mark(r), r.status[:40],
        ])  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    out = [
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *lines]
    ]
    return "\n".join(
        [
            *header_lines(s),
            *out,
            "front: * recommended (*F, *S: and on a frontier), F quality-vs-latency frontier, "
            "S quality-vs-size frontier "
            "(measured trials only; simulated sizes are computed, shown as packed MB)",
            recommendation_line(s),
        ]
    )


def recommendation_line(s: SweepSummary) -> str:
    r, c = s.recommended, s.constraints
    if r is None:
        limits = f"quality drop <= {c.max_accuracy_drop:g}"
        limits += f", max_latency_ms={c.max_latency_ms}" if c.max_latency_ms else ""
        limits += f", max_size_mb={c.max_size_mb}" if c.max_size_mb else ""
        return (
            f"recommendation for {s.target[1]}: none - no measured trial meets {limits} (on validation) while "
            f"being faster than the dense model by more than the {s.noise:.0%} noise floor"
        )
    knobs = ", ".join(f"{k}={short(str(r.searched[k]))}" for k in s.searched if k in r.searched)
    _, unit = drop_unit(s)
    return (
        f"recommendation for {s.target[1]}: trial {r.trial_id} ({knobs}; {r.backend}): "
        f"{fmt_speedup(r)} faster than the dense model on {s.target[1].split(',')[0]}, "
        f"{s.metric.name} {r.q:.4f} "
        f"(test drop {fmt_drop(s, r.q_drop, r.q_drop_lo, r.q_drop_hi)} {unit}; chosen on "
        f"validation drop {fmt_drop(s, r.val_q_drop)} {unit}), size {r.size_ratio:.2f}x; "
        f"MLflow run {r.run_id}"
    )


def write_csv(s: SweepSummary, path: Path) -> None:
    """Every column of every row; quality columns under the metric's own name."""
    rows = [row.as_dict(s.metric.name) for row in s.rows]
    keys = list(dict.fromkeys(k for row in rows for k in row)) or ["trial_id"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)


def target_lines(others: list[SweepSummary]) -> list[str]:
    """The other targets in brief: frontier and recommendation of each."""
    out = []
    for s in others:
        front = ", ".join(f"{r.trial_id} {fmt_speedup(r)}" for r in s.rows if r.on_front)
        out += [f"target {s.target[1]}: noise floor {s.noise:.0%}; frontier: {front or 'none'}",
                recommendation_line(s)]  # fmt: skip
    return out
