"""Pareto frontier and recommendation on hand-made cases (pure logic, no I/O)."""

from __future__ import annotations

from accelab.sweep.pareto import Constraints, TrialPoint, pareto_front, recommend, violations


def P(tid, score, lat, size=1.0, simulated=False, status="ok", speedup=None, val_drop=0.0):
    if speedup is None and lat is not None:
        speedup = 10.0 / lat
    return TrialPoint(tid, score, lat, size, simulated, "", status, speedup, val_drop)


def ids(points):
    return [p.trial_id for p in points]


def test_dominated_points_are_dropped_and_front_sorted_by_latency():
    pts = [P("a", 0.95, 10), P("b", 0.94, 5), P("c", 0.93, 6), P("d", 0.90, 2), P("e", 0.96, 12)]
    assert ids(pareto_front(pts)) == ["d", "b", "a", "e"]  # c is dominated by b


def test_exact_ties_are_both_kept_and_equal_cost_keeps_the_better():
    pts = [P("a", 0.95, 5), P("b", 0.95, 5), P("c", 0.94, 5)]
    assert ids(pareto_front(pts)) == ["a", "b"]


def test_simulated_and_failed_points_are_on_no_frontier():
    pts = [
        P("a", 0.95, 5, size=2.0),
        P("sim", 0.99, None, size=0.5, simulated=True),  # computed size: not a real file
        P("bad", 0.99, 1, size=0.1, status="stopped"),
    ]
    assert ids(pareto_front(pts)) == ["a"]
    assert ids(pareto_front(pts, cost="size_mb")) == ["a"]


def test_recommend_fastest_within_the_validation_drop():
    pts = [
        P("fast_bad", 0.95, 1, val_drop=0.05),
        P("fast_ok", 0.94, 3, val_drop=0.005),
        P("slow_ok", 0.95, 8, val_drop=0.0),
    ]
    assert recommend(pts, Constraints(max_accuracy_drop=0.01)).trial_id == "fast_ok"


def test_selection_uses_validation_not_test():
    """Test and validation disagree: the test numbers must not decide."""
    great_on_test = P("test_ok_val_bad", 0.99, 1, val_drop=0.03)  # best test score, bad on val
    fine_on_val = P("val_ok", 0.80, 2, val_drop=0.0)  # poor test score, fine on val
    best = recommend([great_on_test, fine_on_val], Constraints(0.01))
    assert best.trial_id == "val_ok"
    assert violations(great_on_test, Constraints(0.01)) == ["validation drop 0.0300 > 0.01"]


def test_trial_without_a_validation_drop_cannot_qualify():
    pts = [P("a", 0.95, 1, val_drop=None)]
    assert recommend(pts, Constraints(0.01)) is None
    assert violations(pts[0], Constraints(0.01)) == ["no validation drop recorded"]


def test_speed_differences_inside_the_noise_floor_are_a_tie():
    fast = P("fast", 0.95, 1, speedup=2.00, val_drop=0.008)
    almost = P("almost", 0.95, 1, speedup=1.94, val_drop=0.001)  # 3% slower, more accurate
    assert recommend([fast, almost], Constraints(0.01), noise=0.0).trial_id == "fast"
    assert recommend([fast, almost], Constraints(0.01), noise=0.05).trial_id == "almost"
    # beyond the floor the faster one wins even when less accurate
    slower = P("slower", 0.95, 1, speedup=1.50, val_drop=0.0)
    assert recommend([fast, slower], Constraints(0.01), noise=0.05).trial_id == "fast"


def test_ties_then_prefer_smaller():
    a = P("a", 0.95, 1, size=3.0, speedup=2.0, val_drop=0.0)
    b = P("b", 0.95, 1, size=1.0, speedup=1.99, val_drop=0.0)
    assert recommend([a, b], Constraints(0.01), noise=0.02).trial_id == "b"


def test_recommend_none_when_nothing_meets_the_constraints():
    pts = [P("a", 0.80, 1, val_drop=0.2), P("sim", 0.95, None, simulated=True)]
    assert recommend(pts, Constraints(0.01)) is None
    assert recommend([P("a", 0.95, 9)], Constraints(0.01, max_latency_ms=5)) is None


def test_violations_name_each_broken_constraint():
    v = violations(
        P("a", 0.90, 9, size=4.0, val_drop=0.05), Constraints(0.01, max_latency_ms=5, max_size_mb=1)
    )
    assert [x.split()[0] for x in v] == ["validation", "latency", "size"]


def test_equal_quality_at_lower_cost_dominates():
    assert ids(pareto_front([P("slow", 0.95, 5), P("fast", 0.95, 4)])) == ["fast"]


def test_constraint_boundaries_are_inclusive_and_a_missing_latency_fails():
    c = Constraints(max_accuracy_drop=0.01, max_latency_ms=2.0, max_size_mb=1.0)
    assert violations(P("edge", 0.9, 2.0, size=1.0, val_drop=0.01), c) == []  # at each limit
    assert violations(P("under", 0.9, 1.5, size=0.5, val_drop=0.0), c) == []
    over = violations(P("over", 0.9, 2.5, size=1.5, val_drop=0.02), c)
    assert len(over) == 3
    assert violations(P("no_speed", 0.9, None, speedup=1.0, val_drop=0.0), c) == [
        "latency None ms > 2.0 ms"
    ]


def test_recommend_needs_a_speedup_beyond_the_noise_floor():
    c = Constraints(max_accuracy_drop=0.01)
    assert recommend([P("x", 0.9, 1, speedup=1.5)], c).trial_id == "x"  # default floor: none
    assert recommend([P("x", 0.9, 1, speedup=1.05)], c, noise=0.05) is None  # at the floor
    assert recommend([P("x", 0.9, 1, speedup=1.0)], c, noise=0.05) is None  # inside it
    assert recommend([P("x", 0.9, 1, speedup=1.06)], c, noise=0.05).trial_id == "x"


def test_among_equals_the_faster_wins():
    c = Constraints(max_accuracy_drop=0.01)
    pts = [P("a", 0.9, 1, speedup=2.0), P("b", 0.9, 1, speedup=2.05)]  # same drop and size
    assert recommend(pts, c, noise=0.05).trial_id == "b"


def S(tid, speedup, val_drop, score=0.9):
    """A measured point as the sweep's frontier sees it: speed as speedup over dense."""
    return TrialPoint(tid, score, 1.0, 1.0, False, "", "ok", speedup, val_drop)


def test_speedup_frontier_judges_validation_with_the_noise_floor():
    """The sweep's own frontier: speedup (higher is better), quality = validation drop,
    speedups within the A/A floor are a tie. Test scores rank the other way on purpose."""
    pts = [
        S("a", 2.40, 0.002, score=0.99),  # tie on speed with b, worse on validation
        S("b", 2.35, 0.000, score=0.90),
        S("c", 3.00, 0.010, score=0.80),  # faster beyond the floor, worse: stays on
        S("d", 1.50, 0.020, score=0.99),  # slower and worse on validation than b
    ]
    assert ids(pareto_front(pts, "speedup", 0.04, by="selection")) == ["c", "b"]  # fastest first
    # without the floor a is faster than b: both stay
    assert ids(pareto_front(pts, "speedup", 0.0, by="selection")) == ["c", "a", "b"]
    # on the test split a is as fast as b and better: b drops off instead
    assert ids(pareto_front(pts, "speedup", 0.04, by="test")) == ["c", "a"]


def test_speed_just_beyond_the_floor_is_faster_and_equal_speed_is_a_tie():
    pts = [S("a", 2.5, 0.01), S("b", 2.35, 0.0)]  # 2.5 > 2.35 * 1.04 = 2.444
    assert ids(pareto_front(pts, "speedup", 0.04, by="selection")) == ["a", "b"]
    same = [S("a", 2.0, 0.0), S("b", 2.0, 0.0)]
    assert ids(pareto_front(same, "speedup", 0.0, by="selection")) == ["a", "b"]


def test_lower_is_better_costs_use_the_floor_too():
    pts = [P("a", 0.94, 1.00), P("b", 0.95, 1.03)]  # 3% apart: inside a 4% floor
    assert ids(pareto_front(pts, "latency_ms", noise=0.04)) == ["b"]
    assert ids(pareto_front(pts, "latency_ms", noise=0.0)) == ["a", "b"]


def test_the_selection_frontier_leaves_out_trials_without_a_validation_drop():
    pts = [S("a", 2.0, None, score=0.99), S("b", 1.5, 0.0, score=0.5)]
    assert ids(pareto_front(pts, "speedup", by="selection")) == ["b"]
    assert ids(pareto_front(pts, "speedup", by="test")) == ["a"]  # reported on test: a is best


def test_at_equal_speed_the_better_one_dominates_and_inside_the_floor_equals_stay():
    same_speed = [S("a", 2.0, 0.01), S("b", 2.0, 0.0)]
    assert ids(pareto_front(same_speed, "speedup", 0.0, by="selection")) == ["b"]
    equal_quality = [S("a", 2.40, 0.0), S("b", 2.35, 0.0)]  # a tie on both: neither dominates
    assert ids(pareto_front(equal_quality, "speedup", 0.04, by="selection")) == ["a", "b"]
