"""Pareto frontier and recommendation over measured trials (pure logic, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TrialPoint:
    """One compressed variant as the frontier sees it. ``latency_ms`` is None when the
    variant has no real kernel (simulated): it has an accuracy but no speed."""

    trial_id: str
    accuracy: float
    latency_ms: float | None
    size_mb: float
    simulated: bool = False
    backend: str = ""
    status: str = "ok"
    speedup: float | None = None  # vs the dense model measured alongside, in the same process
    selection_drop: float | None = None  # validation accuracy drop: what constraints judge


def dominates(a: TrialPoint, b: TrialPoint, cost: str) -> bool:
    """a is at least as good on accuracy and ``cost`` and strictly better on one."""
    ca, cb = getattr(a, cost), getattr(b, cost)
    no_worse = a.accuracy >= b.accuracy and ca <= cb
    return no_worse and (a.accuracy > b.accuracy or ca < cb)


def pareto_front(points: Sequence[TrialPoint], cost: str = "latency_ms") -> list[TrialPoint]:
    """Non-dominated points on (max accuracy, min ``cost``), sorted by cost.

    Points lacking the cost (simulated latency) or not ``ok`` are left out. Exact ties
    are all kept: neither dominates the other."""
    usable = [p for p in points if p.status == "ok" and getattr(p, cost) is not None]
    front = [p for p in usable if not any(dominates(q, p, cost) for q in usable if q is not p)]
    return sorted(front, key=lambda p: (getattr(p, cost), -p.accuracy, p.trial_id))


@dataclass(frozen=True)
class Constraints:
    max_accuracy_drop: float
    max_latency_ms: float | None = None
    max_size_mb: float | None = None


def violations(p: TrialPoint, baseline_accuracy: float, c: Constraints) -> list[str]:
    """Which constraints ``p`` breaks, in words (empty when it meets them all)."""
    out = []
    if p.selection_drop is not None:  # the test split is for reporting, not for choosing
        drop, what = p.selection_drop, "validation accuracy drop"
    else:
        drop, what = baseline_accuracy - p.accuracy, "accuracy drop"
    if drop > c.max_accuracy_drop + 1e-12:
        out.append(f"{what} {drop:.4f} > {c.max_accuracy_drop}")
    if c.max_latency_ms is not None and (p.latency_ms is None or p.latency_ms > c.max_latency_ms):
        out.append(f"latency {p.latency_ms} ms > {c.max_latency_ms} ms")
    if c.max_size_mb is not None and p.size_mb > c.max_size_mb:
        out.append(f"size {p.size_mb:.3f} MB > {c.max_size_mb} MB")
    return out


def recommend(
    points: Sequence[TrialPoint], baseline_accuracy: float, c: Constraints
) -> TrialPoint | None:
    """The fastest measured (not simulated) trial meeting every constraint; ties go to
    higher accuracy, then smaller size, then trial id. None when nothing qualifies.

    "Fastest" is the highest speedup where trials carry one (each measured against the
    dense model in its own process, so trials measured at noisier moments stay
    comparable), else the lowest latency."""
    ok = [
        p
        for p in points
        if p.status == "ok" and p.latency_ms is not None and not violations(p, baseline_accuracy, c)
    ]
    if not ok:
        return None

    def speed(p: TrialPoint) -> tuple[int, float]:
        return (0, -p.speedup) if p.speedup is not None else (1, p.latency_ms)

    return min(ok, key=lambda p: (speed(p), -p.accuracy, p.size_mb, p.trial_id))
