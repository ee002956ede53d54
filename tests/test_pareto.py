"""Pareto frontier and recommendation on hand-made cases."""

from __future__ import annotations

from accelab.pareto import Constraints, TrialPoint, pareto_front, recommend, violations


def P(tid, acc, lat, size=1.0, simulated=False, status="ok"):
    return TrialPoint(tid, acc, lat, size, simulated=simulated, status=status)


def ids(points):
    return [p.trial_id for p in points]


def test_dominated_points_are_dropped_and_front_sorted_by_latency():
    pts = [P("a", 0.95, 10), P("b", 0.94, 5), P("c", 0.93, 6), P("d", 0.90, 2), P("e", 0.96, 12)]
    assert ids(pareto_front(pts)) == ["d", "b", "a", "e"]  # c is dominated by b


def test_exact_ties_are_both_kept_and_equal_cost_keeps_the_more_accurate():
    pts = [P("a", 0.95, 5), P("b", 0.95, 5), P("c", 0.94, 5)]
    assert ids(pareto_front(pts)) == ["a", "b"]


def test_simulated_and_failed_points_are_not_on_the_latency_front():
    pts = [
        P("a", 0.95, 5),
        P("sim", 0.99, None, simulated=True),
        P("bad", 0.99, 1, status="stopped"),
    ]
    assert ids(pareto_front(pts)) == ["a"]
    # but a simulated point has a size, so it can sit on the size front
    sized = [P("a", 0.95, 5, size=2.0), P("sim", 0.99, None, size=0.5, simulated=True)]
    assert ids(pareto_front(sized, cost="size_mb")) == ["sim"]


def test_recommend_fastest_within_accuracy_drop():
    pts = [P("fast_bad", 0.90, 1), P("fast_ok", 0.945, 3), P("slow_ok", 0.95, 8)]
    best = recommend(pts, baseline_accuracy=0.95, c=Constraints(max_accuracy_drop=0.01))
    assert best.trial_id == "fast_ok"


def test_recommend_ties_prefer_accuracy_then_size():
    pts = [P("a", 0.94, 3, size=2.0), P("b", 0.95, 3, size=3.0), P("c", 0.95, 3, size=1.0)]
    assert recommend(pts, 0.95, Constraints(0.02)).trial_id == "c"


def test_recommend_none_when_nothing_meets_the_constraints():
    pts = [P("a", 0.80, 1), P("sim", 0.95, None, simulated=True)]
    assert recommend(pts, 0.95, Constraints(0.01)) is None
    assert recommend([P("a", 0.95, 9)], 0.95, Constraints(0.01, max_latency_ms=5)) is None


def test_recommend_prefers_the_same_process_speedup_over_raw_latency():
    # b's absolute latency is lower, but a was measured faster against its own baseline.
    pts = [
        TrialPoint("a", 0.95, 1.7, 1.0, speedup=1.9),
        TrialPoint("b", 0.95, 1.5, 1.0, speedup=1.6),
    ]
    assert recommend(pts, 0.95, Constraints(0.01)).trial_id == "a"


def test_violations_name_each_broken_constraint():
    v = violations(
        P("a", 0.90, 9, size=4.0), 0.95, Constraints(0.01, max_latency_ms=5, max_size_mb=1)
    )
    assert len(v) == 3 and v[0].startswith("accuracy drop")
