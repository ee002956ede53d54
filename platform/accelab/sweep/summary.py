"""A sweep's result, rebuilt from MLflow alone: trial rows, Pareto fronts, recommendation.

Used at the end of ``accelab sweep`` and by ``accelab report`` (any tracking URI), so a
teammate sees the same table without the Ray results directory.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from accelab.errors import UsageError
from accelab.pareto import Constraints, TrialPoint, pareto_front, recommend, violations

SWEEP_KIND = "sweep"
TRIAL_KIND = "trial"
ROW_METRICS = (
    "accuracy", "accuracy_drop", "latency_p50_ms", "latency_p95_ms", "speedup",
    "size_mb", "size_ratio", "sparsity", "bits", "val_accuracy", "val_accuracy_drop",
)  # fmt: skip


@dataclass
class SweepSummary:
    parent_run_id: str
    baseline: dict[str, float]
    constraints: Constraints
    searched: list[str]
    rows: list[dict[str, Any]]
    front: list[str]
    size_front: list[str]
    recommended: dict[str, Any] | None


def find_parent(client: MlflowClient, experiment: str, parent_run_id: str | None = None):
    if parent_run_id:
        return client.get_run(parent_run_id)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [exp.experiment_id], "tags.`accelab.kind` = 'sweep'", max_results=1,
        order_by=["start_time DESC"],
    ) if exp else []  # fmt: skip
    if not runs:
        raise UsageError(
            f"report: no accelab sweep in MLflow experiment {experiment!r} at {client.tracking_uri}"
        )
    return runs[0]


def child_runs(client: MlflowClient, parent) -> list:
    query = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`accelab.kind` = 'trial'"
    return client.search_runs([parent.info.experiment_id], query, max_results=5000)


def short(value: str) -> str:
    """'0.47440675196366233' -> '0.4744' for display; other values unchanged."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return value if number.is_integer() or len(value) <= 6 else f"{number:.4g}"


def trial_row(run) -> dict[str, Any]:
    m, tags = run.data.metrics, run.data.tags
    row: dict[str, Any] = {
        "trial_id": tags.get("accelab.trial_id", run.info.run_id[:8]),
        "run_id": run.info.run_id,
        "status": tags.get("accelab.status", "unfinished"),
        "backend": tags.get("accelab.backend", ""),
        "simulated": tags.get("accelab.simulated") == "true",
    }
    row.update({k: m.get(k) for k in ROW_METRICS})
    row.update(
        {k[len("searched.") :]: v for k, v in run.data.params.items() if k.startswith("searched.")}
    )
    return row


def point(row: dict[str, Any]) -> TrialPoint:
    return TrialPoint(
        trial_id=row["trial_id"],
        accuracy=row["accuracy"] if row["accuracy"] is not None else -math.inf,
        latency_ms=None if row["simulated"] else row["latency_p50_ms"],
        size_mb=row["size_mb"] if row["size_mb"] is not None else math.inf,
        simulated=row["simulated"],
        backend=row["backend"],
        status="ok" if row["status"] == "ok" else row["status"],
        speedup=None if row["simulated"] else row["speedup"],
        selection_drop=row["val_accuracy_drop"],
    )


def summarize(client: MlflowClient, parent) -> SweepSummary:
    p, m = parent.data.params, parent.data.metrics
    constraints = Constraints(
        max_accuracy_drop=float(p.get("sweep.constraints.max_accuracy_drop", 0.01)),
        max_latency_ms=float(v)
        if (v := p.get("sweep.constraints.max_latency_ms", "None")) != "None"
        else None,
        max_size_mb=float(v)
        if (v := p.get("sweep.constraints.max_size_mb", "None")) != "None"
        else None,
    )
    baseline = {k[len("baseline_") :]: v for k, v in m.items() if k.startswith("baseline_")}
    runs = child_runs(client, parent)
    rows = sorted((trial_row(r) for r in runs), key=lambda r: r["trial_id"])
    points = [point(r) for r in rows]
    front = [q.trial_id for q in pareto_front(points)]
    size_front = [q.trial_id for q in pareto_front(points, cost="size_mb")]
    best = recommend(points, baseline.get("accuracy", 0.0), constraints)
    for row, q in zip(rows, points, strict=True):
        row["on_front"] = row["trial_id"] in front
        row["on_size_front"] = row["trial_id"] in size_front
        row["recommended"] = best is not None and q.trial_id == best.trial_id
        row["meets_constraints"] = q.status == "ok" and not violations(
            q, baseline.get("accuracy", 0.0), constraints
        )
    recommended = next((r for r in rows if r["recommended"]), None)
    searched = sorted(
        {k[len("searched.") :] for r in runs for k in r.data.params if k.startswith("searched.")}
    )
    return SweepSummary(
        parent.info.run_id, baseline, constraints, searched, rows, front, size_front, recommended
    )


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def format_table(s: SweepSummary) -> str:
    """The frontier table and the recommendation, as printed at the end of a sweep."""
    labels = {k: k.split(".")[-1] for k in s.searched}
    head = [
        "trial",
        *labels.values(),
        "backend",
        "acc",
        "drop",
        "p50 ms",
        "speedup",
        "size MB",
        "front",
        "status",
    ]
    lines = []
    for r in s.rows:
        mark = (
            "*"
            if r["recommended"]
            else ("F" if r["on_front"] else ("S" if r["on_size_front"] else ""))
        )
        speed = (
            "n/a (simulated)"
            if r["simulated"]
            else _fmt(r["speedup"], ".2f") + ("x" if r["speedup"] else "")
        )
        lines.append([
            r["trial_id"], *(short(str(r.get(k, ""))) for k in s.searched), r["backend"],
            _fmt(r["accuracy"]), _fmt(r["accuracy_drop"], "+.4f"), _fmt(r["latency_p50_ms"], ".3f"),
            speed, _fmt(r["size_mb"], ".3f"), mark, r["status"][:40],
        ])  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    out = [
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *lines]
    ]
    b = s.baseline
    out.insert(0, (
        f"baseline (dense fp32): acc {_fmt(b.get('accuracy'))}  p50 {_fmt(b.get('latency_p50_ms'), '.3f')} ms  "
        f"size {_fmt(b.get('size_mb'), '.3f')} MB"
    ))  # fmt: skip
    out.append("front: * recommended, F accuracy-vs-latency frontier, S accuracy-vs-size frontier")
    out.append(recommendation_line(s))
    return "\n".join(out)


def recommendation_line(s: SweepSummary) -> str:
    r = s.recommended
    if r is None:
        return (
            f"recommendation: none - no measured trial meets max_accuracy_drop={s.constraints.max_accuracy_drop}"
            + (
                f", max_latency_ms={s.constraints.max_latency_ms}"
                if s.constraints.max_latency_ms
                else ""
            )
            + (f", max_size_mb={s.constraints.max_size_mb}" if s.constraints.max_size_mb else "")
        )
    knobs = ", ".join(f"{k}={short(str(r.get(k)))}" for k in s.searched)
    return (
        f"recommendation: trial {r['trial_id']} ({knobs}; {r['backend']}): "
        f"{r['speedup']:.2f}x faster than dense fp32, accuracy {r['accuracy']:.4f} "
        f"(test drop {r['accuracy_drop'] * 100:+.2f} points; chosen on validation drop "
        f"{r['val_accuracy_drop'] * 100:+.2f}), size {r['size_ratio']:.2f}x; MLflow run {r['run_id']}"
    )


def write_csv(s: SweepSummary, path: Path) -> None:
    keys = list(dict.fromkeys(k for row in s.rows for k in row)) or ["trial_id"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(s.rows)
