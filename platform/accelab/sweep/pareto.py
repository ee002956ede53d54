"""Pareto frontier and recommendation over measured trials (pure logic, no I/O).

``score`` is the task's test metric oriented so that higher is better (accuracy as is, a
loss negated); ``selection_drop`` is the validation drop (> 0 = worse than the dense
model): constraints and the recommendation use validation, the test split is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TrialPoint:
    """One compressed variant as the frontier sees it. ``latency_ms`` and ``speedup`` are
    None when the variant has no real kernel (simulated): it has a quality but no speed,
    and its size is a computed one, so it stays off both frontiers."""

    trial_id: str
    score: float
    latency_ms: float | None
    size_mb: float
    simulated: bool = False
    backend: str = ""
    status: str = "ok"
    speedup: float | None = None  # vs the dense model measured alongside, in the same process
    selection_drop: float | None = None  # validation drop: what constraints judge


def quality(p: TrialPoint, by: str = "test") -> float | None:
    """Higher is better: the test score (reported), or minus the validation drop (what the
    recommendation is chosen on)."""
    if by == "test":
        return p.score
    return None if p.selection_drop is None else -p.selection_drop


def beats(x: float, y: float, cost: str, noise: float = 0.0) -> bool:
    """``x`` is better than ``y`` on ``cost`` beyond the relative noise floor (a speedup is
    higher-is-better, a latency or size lower-is-better)."""
    return x > y * (1.0 + noise) if cost == "speedup" else x * (1.0 + noise) < y


def dominates(
    a: TrialPoint, b: TrialPoint, cost: str, noise: float = 0.0, by: str = "test"
) -> bool:
    """a is at least as good on quality and ``cost`` (within the noise floor) and better on
    one (quality strictly, or ``cost`` beyond the floor)."""
    qa, qb, ca, cb = quality(a, by), quality(b, by), getattr(a, cost), getattr(b, cost)
    no_worse = qa >= qb and not beats(cb, ca, cost, noise)
    return no_worse and (qa > qb or beats(ca, cb, cost, noise))


def pareto_front(
    points: Sequence[TrialPoint], cost: str = "latency_ms", noise: float = 0.0, by: str = "test"
) -> list[TrialPoint]:
    """Non-dominated measured points on (quality, ``cost``), best cost first.

    ``cost``: ``latency_ms``, ``size_mb`` (lower is better) or ``speedup`` (higher);
    ``noise``: costs within this relative floor of each other are a tie; ``by``: quality on
    the test split (``test``) or the validation drop (``selection``). Simulated points (no
    latency; a computed, not a real, size), points that are not ``ok`` and points without
    the quality or cost are left out. Exact ties are all kept: neither dominates the other."""
    usable = [
        p
        for p in points
        if p.status == "ok"
        and not p.simulated
        and getattr(p, cost) is not None
        and quality(p, by) is not None
    ]
    front = [
        p for p in usable if not any(dominates(q, p, cost, noise, by) for q in usable if q is not p)
    ]
    sign = -1.0 if cost == "speedup" else 1.0
    return sorted(front, key=lambda p: (sign * getattr(p, cost), -quality(p, by), p.trial_id))


@dataclass(frozen=True)
class Constraints:
    max_accuracy_drop: float
    max_latency_ms: float | None = None
    max_size_mb: float | None = None


def violations(p: TrialPoint, c: Constraints) -> list[str]:
    """Which constraints ``p`` breaks, in words (empty when it meets them all). Quality is
    judged on the validation drop only: a trial without one cannot qualify."""
    out = []
    if p.selection_drop is None:
        out.append("no validation drop recorded")
    elif p.selection_drop > c.max_accuracy_drop + 1e-12:
        out.append(f"validation drop {p.selection_drop:.4f} > {c.max_accuracy_drop}")
    if c.max_latency_ms is not None and (p.latency_ms is None or p.latency_ms > c.max_latency_ms):
        out.append(f"latency {p.latency_ms} ms > {c.max_latency_ms} ms")
    if c.max_size_mb is not None and p.size_mb > c.max_size_mb:
        out.append(f"size {p.size_mb:.3f} MB > {c.max_size_mb} MB")
    return out


def recommend(
    points: Sequence[TrialPoint], c: Constraints, noise: float = 0.0
) -> TrialPoint | None:
    """The fastest measured trial meeting every constraint, where "faster" must beat the
    noise floor (relative, from the sweep's A/A control):

    - a trial qualifies only if it is faster than the dense model by more than the floor
      (a 1.03x trial with a 5% floor is not measurably faster than not compressing);
    - every qualifying trial whose speedup is within the floor of the fastest counts as
      equally fast, and among those the smallest validation drop wins, then the smaller
      size, then the higher speedup.

    "Fast" is the same-process speedup (each trial measured against the dense model in
    its own process, so trials measured at noisier moments stay comparable)."""
    ok = [
        p
        for p in points
        if p.status == "ok"
        and not p.simulated
        and p.speedup is not None
        and p.speedup > 1.0 + noise
        and not violations(p, c)
    ]
    if not ok:
        return None
    fastest = max(p.speedup for p in ok)
    tied = [p for p in ok if p.speedup * (1.0 + noise) >= fastest]
    return min(tied, key=lambda p: (p.selection_drop, p.size_mb, -p.speedup, p.trial_id))
