"""A sweep's result, rebuilt from MLflow alone: trial rows, Pareto fronts, recommendation.

Used at the end of ``accelab sweep`` and by ``accelab report`` (any tracking URI), so a
teammate sees the same table without the Ray results directory. Formatting lives in
``sweep.table``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from mlflow.tracking import MlflowClient

from accelab.errors import UsageError
from accelab.sweep.pareto import Constraints, TrialPoint, pareto_front, recommend, violations
from accelab.tracking import names

SWEEP_KIND = "sweep"
TRIAL_KIND = "trial"
TARGETS_TAG = names.TARGETS  # [[key, label], ...] of the sweep, the primary one first
METRIC_TAG = names.METRIC
HIGHER_TAG = names.METRIC_HIGHER
RELATIVE_TAG = names.METRIC_RELATIVE
# the metrics a TrialRow reads, each under its own name (also the TrialRow field's name)
ROW_METRICS = (
    names.M_LATENCY_P50_MS, names.M_LATENCY_P95_MS, names.lo(names.M_LATENCY_P50_MS),
    names.hi(names.M_LATENCY_P50_MS), names.M_BASELINE_LATENCY_P50_MS,
    names.M_TORCH_LATENCY_P50_MS, names.M_SPEEDUP, names.M_SPEEDUP_LO, names.M_SPEEDUP_HI,
    names.M_SPEEDUP_VS_TORCH, names.M_SIZE_MB, names.M_PACKED_SIZE_MB, names.M_SIZE_RATIO,
    names.M_SPARSITY, names.M_BITS, names.M_N_TEST,
)  # fmt: skip
TARGET_FREE = {names.M_SPARSITY, names.M_BITS, names.M_N_TEST}  # one per trial: no target suffix


def _quality(m: str) -> tuple[str, ...]:
    drop, val = names.drop(m), names.on_val(m)
    val_drop = names.drop(val)
    return (m, names.lo(m), names.hi(m), drop, names.lo(drop), names.hi(drop),
            val, val_drop, names.lo(val_drop), names.hi(val_drop))  # fmt: skip


QUALITY_FIELDS = _quality("q")  # TrialRow's quality fields: the names for a metric "q"


def quality_names(metric: str) -> dict[str, str]:
    """TrialRow quality field -> the metric it is read from, for the task's ``metric``."""
    return dict(zip(QUALITY_FIELDS, _quality(metric), strict=True))


@dataclass(frozen=True)
class MetricInfo:
    """The task's metric as the parent run records it."""

    name: str = "accuracy"
    higher_is_better: bool = True
    relative_drop: bool = False  # drops are relative (perplexity), else in metric units

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> MetricInfo:
        return cls(
            tags.get(METRIC_TAG, "accuracy"),
            tags.get(HIGHER_TAG, "true") == "true",
            tags.get(RELATIVE_TAG, "false") == "true",
        )

    def to_tags(self) -> dict[str, str]:
        return {
            METRIC_TAG: self.name,
            HIGHER_TAG: str(self.higher_is_better).lower(),
            RELATIVE_TAG: str(self.relative_drop).lower(),
        }


@dataclass
class TrialRow:
    """One trial on one deployment target, as every view of a sweep reads it (table,
    pareto.csv, pareto.png, the MLflow description, the registry). Quality fields are the
    task's metric (``q``: accuracy, perplexity, ...); drops are > 0 when worse than dense."""

    trial_id: str
    name: str = ""
    run_id: str = ""
    status: str = "ok"
    backend: str = ""
    simulated: bool = False
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p50_ms_lo: float | None = None
    latency_p50_ms_hi: float | None = None
    baseline_latency_p50_ms: float | None = None
    torch_latency_p50_ms: float | None = None
    speedup: float | None = None  # against the dense model on this runtime, same process
    speedup_lo: float | None = None
    speedup_hi: float | None = None
    speedup_vs_torch: float | None = None
    size_mb: float | None = None
    packed_size_mb: float | None = None
    size_ratio: float | None = None
    sparsity: float | None = None
    bits: float | None = None
    n_test: float | None = None
    q: float | None = None
    q_lo: float | None = None
    q_hi: float | None = None
    q_drop: float | None = None
    q_drop_lo: float | None = None
    q_drop_hi: float | None = None
    val_q: float | None = None
    val_q_drop: float | None = None
    val_q_drop_lo: float | None = None
    val_q_drop_hi: float | None = None
    searched: dict[str, str] = field(default_factory=dict)  # knob -> value as logged
    on_front: bool = False
    on_size_front: bool = False
    recommended: bool = False
    meets_constraints: bool = False

    def as_dict(self, metric: str = "q") -> dict[str, Any]:
        """Flat columns (pareto.csv): quality columns under the metric's own name
        (``accuracy_drop``, ...), the searched knobs under their dotted keys."""
        rename = quality_names(metric)
        out = {rename.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}
        del out["searched"]
        return {**out, **self.searched}


@dataclass
class SweepSummary:
    parent_run_id: str
    target: tuple[str, str]  # (key, label) of the deployment target this summary is about
    metric: MetricInfo
    baseline: dict[str, float]  # the A/A control: baseline quality, latency, noise floor
    constraints: Constraints
    searched: list[str]
    rows: list[TrialRow]
    front: list[str]
    size_front: list[str]
    recommended: TrialRow | None

    @property
    def noise(self) -> float:
        return self.baseline.get(names.M_NOISE_FLOOR, 0.0)


def find_parent(client: MlflowClient, experiment: str, parent_run_id: str | None = None):
    if parent_run_id:
        return client.get_run(parent_run_id)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [exp.experiment_id], f"tags.`{names.KIND}` = '{SWEEP_KIND}'", max_results=1,
        order_by=["start_time DESC"],
    ) if exp else []  # fmt: skip
    if not runs:
        raise UsageError(
            f"no accelab sweep in MLflow experiment {experiment!r} at {client.tracking_uri}"
        )
    return runs[0]


def child_runs(client: MlflowClient, parent) -> list:
    query = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`{names.KIND}` = '{TRIAL_KIND}'"
    return client.search_runs([parent.info.experiment_id], query, max_results=5000)


def trial_row(run, metric: MetricInfo, sfx: str = "") -> TrialRow:
    """One trial on one target (``sfx`` = ".<target key>", "" for the primary target)."""
    m, tags = run.data.metrics, run.data.tags
    simulated = m.get(names.M_SIMULATED + sfx)
    status = tags.get(names.STATUS, "unfinished")
    if error := tags.get(names.TARGET_ERROR + sfx):
        status = f"n/a: {error}"
    numbers = {k: m.get(k if k in TARGET_FREE else k + sfx) for k in ROW_METRICS}
    quality = {f: m.get(name + sfx) for f, name in quality_names(metric.name).items()}
    return TrialRow(
        trial_id=tags.get(names.TRIAL_ID, run.info.run_id[:8]),
        name=tags.get("mlflow.runName", ""),
        run_id=run.info.run_id,
        status=status,
        backend=tags.get(names.BACKEND + sfx, ""),
        simulated=bool(simulated) if simulated is not None else tags.get(names.SIMULATED) == "true",
        searched={
            k[len("searched.") :]: v
            for k, v in run.data.params.items()
            if k.startswith("searched.")
        },
        **numbers,
        **quality,
    )


def point(row: TrialRow, metric: MetricInfo) -> TrialPoint:
    q = row.q
    score = -math.inf if q is None else (q if metric.higher_is_better else -q)
    return TrialPoint(
        trial_id=row.trial_id,
        score=score,
        latency_ms=None if row.simulated else row.latency_p50_ms,
        size_mb=row.size_mb if row.size_mb is not None else math.inf,
        simulated=row.simulated,
        backend=row.backend,
        status=row.status,
        speedup=None if row.simulated else row.speedup,
        selection_drop=row.val_q_drop,
    )


def constraints_from(params: dict[str, str]) -> Constraints:
    def opt(key: str) -> float | None:
        value = params.get(f"sweep.constraints.{key}", "None")
        return None if value == "None" else float(value)

    drop = opt("max_quality_drop")
    return Constraints(
        max_accuracy_drop=float(params.get("sweep.constraints.max_accuracy_drop", 0.01))
        if drop is None
        else drop,
        max_latency_ms=opt("max_latency_ms"),
        max_size_mb=opt("max_size_mb"),
    )


def targets_of(parent) -> list[tuple[str, str]]:
    """(key, label) of every target the sweep measured, the primary one first."""
    raw = parent.data.tags.get(TARGETS_TAG)
    return [tuple(t) for t in json.loads(raw)] if raw else [("torch_b64", "torch")]


def summarize(client: MlflowClient, parent, target: str | None = None) -> SweepSummary:
    """Rows of every trial child run on one target (default: the primary), both frontiers
    and the recommendation for that target."""
    return summary_of(parent, child_runs(client, parent), target)


def summary_of(parent, runs: list, target: str | None = None) -> SweepSummary:
    """``summarize`` given the sweep's run and its trial runs (MLflow Run entities): pure."""
    metric = MetricInfo.from_tags(parent.data.tags)
    targets = targets_of(parent)
    index = [k for k, _ in targets].index(target) if target else 0
    sfx = "" if index == 0 else f".{targets[index][0]}"
    rows = sorted((trial_row(r, metric, sfx) for r in runs), key=lambda r: r.trial_id)
    baseline = {
        k[len(names.BASELINE_PREFIX) :].removesuffix(sfx): v
        for k, v in parent.data.metrics.items()
        if k.startswith(names.BASELINE_PREFIX) and (k.endswith(sfx) if sfx else "." not in k)
    }
    for k, v in parent.data.metrics.items():
        if k.startswith((names.AA_PREFIX, names.M_NOISE_FLOOR)) and (
            k.endswith(sfx) if sfx else "." not in k
        ):
            baseline[k.removesuffix(sfx)] = v
    searched = sorted(
        {k[len("searched.") :] for r in runs for k in r.data.params if k.startswith("searched.")}
    )
    return build_summary(
        parent.info.run_id, targets[index], metric, baseline, constraints_from(parent.data.params),
        searched, rows,
    )  # fmt: skip


def build_summary(
    parent_run_id: str,
    target: tuple[str, str],
    metric: MetricInfo,
    baseline: dict[str, float],
    constraints: Constraints,
    searched: list[str],
    rows: list[TrialRow],
) -> SweepSummary:
    """Mark each row (frontiers, constraints, recommendation): pure, given the rows.

    Both the latency frontier and the recommendation judge speed by the same number (each
    trial's speedup over the dense model timed alongside it, ties within the noise floor)
    and quality by the same split (validation), so the recommendation is always on the
    frontier and every view of the sweep agrees."""
    noise = baseline.get(names.M_NOISE_FLOOR, 0.0)
    points = [point(r, metric) for r in rows]
    front = [q.trial_id for q in pareto_front(points, "speedup", noise, by="selection")]
    size_front = [q.trial_id for q in pareto_front(points, "size_mb", by="selection")]
    best = recommend(points, constraints, noise)
    for row, q in zip(rows, points, strict=True):
        row.on_front = row.trial_id in front
        row.on_size_front = row.trial_id in size_front
        row.recommended = best is not None and q.trial_id == best.trial_id
        row.meets_constraints = q.status == "ok" and not violations(q, constraints)
    recommended = next((r for r in rows if r.recommended), None)
    return SweepSummary(
        parent_run_id, target, metric, baseline, constraints, searched, rows, front, size_front,
        recommended,
    )  # fmt: skip
