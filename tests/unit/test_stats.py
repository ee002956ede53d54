"""The intervals behind every reported number: right formulas, right coverage."""

from __future__ import annotations

import math
import random

import pytest

from accelab.stats import (
    Z95,
    Estimate,
    mean_interval,
    median_interval,
    median_ranks,
    noise_floor,
    paired_mean_drop,
    paired_proportion_drop,
    paired_ratio,
    ratio_spread,
    relative_half_width,
    t_quantile,
    wilson,
)


def test_wilson_known_values_and_edges():
    e = wilson(8, 10)  # textbook: 0.8 -> [0.490, 0.943]
    assert (e.value, round(e.lo, 3), round(e.hi, 3), e.n) == (0.8, 0.49, 0.943, 10)
    assert wilson(0, 20).lo == 0.0 and 0 < wilson(0, 20).hi < 0.2
    assert wilson(20, 20).hi == 1.0 and 0.8 < wilson(20, 20).lo < 1.0
    assert math.isnan(wilson(0, 0).value)


def test_paired_drop_of_identical_predictions_is_exactly_zero():
    right = [True] * 250 + [False] * 20
    d = paired_proportion_drop(right, right)
    assert d.value == 0.0 and d.lo < 0.0 < d.hi and d.n == 270


def test_paired_drop_sign_and_value():
    base = [True] * 270
    variant = [True] * 260 + [False] * 10  # 10 more mistakes
    d = paired_proportion_drop(base, variant)
    assert d.value == pytest.approx(10 / 270)
    assert 0 < d.lo < d.value < d.hi  # clearly worse: the interval excludes zero
    better = paired_proportion_drop(variant, base)
    assert better.value == pytest.approx(-10 / 270) and better.hi < 0


def test_paired_interval_matches_the_large_sample_normal_interval():
    """For large n Newcombe's interval approaches the paired Wald interval."""
    n, b, c = 20000, 600, 400  # b: only baseline right, c: only variant right
    base = [True] * 15000 + [True] * b + [False] * c + [False] * (n - 15000 - b - c)
    var = [True] * 15000 + [False] * b + [True] * c + [False] * (n - 15000 - b - c)
    d = paired_proportion_drop(base, var)
    se = math.sqrt((b + c) - (b - c) ** 2 / n) / n
    assert d.value == pytest.approx((b - c) / n)
    assert d.lo == pytest.approx(d.value - 1.96 * se, rel=0.03)
    assert d.hi == pytest.approx(d.value + 1.96 * se, rel=0.03)


def test_paired_interval_is_much_tighter_than_two_independent_ones():
    base = [True] * 240 + [False] * 30
    var = [True] * 238 + [False] * 2 + [False] * 30  # same hard examples, 2 more misses
    d = paired_proportion_drop(base, var)
    w1, w2 = wilson(240, 270), wilson(238, 270)
    assert (d.hi - d.lo) < 0.5 * ((w1.hi - w1.lo) + (w2.hi - w2.lo)) / 2


def test_paired_interval_covers_the_true_drop_about_95_percent_of_the_time():
    rng = random.Random(0)
    n, trials, covered = 270, 1500, 0
    p_base, p_flip_down, p_flip_up = 0.95, 0.03, 0.01
    true_drop = p_base * p_flip_down - (1 - p_base) * p_flip_up
    for _ in range(trials):
        base = [rng.random() < p_base for _ in range(n)]
        var = [(rng.random() >= p_flip_down) if b else (rng.random() < p_flip_up) for b in base]
        d = paired_proportion_drop(base, var)
        covered += d.lo <= true_drop <= d.hi
    assert 0.92 <= covered / trials <= 0.985


def test_mean_intervals_and_paired_mean_drop():
    e = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert e.value == 2.5 and e.lo == pytest.approx(2.5 - 3.182 * 1.2910 / 2, abs=1e-3)
    d = paired_mean_drop([2.0, 3.0, 4.0], [1.5, 2.5, 3.0])
    assert d.value == pytest.approx(2 / 3) and d.lo < d.value < d.hi
    with pytest.raises(ValueError):
        paired_mean_drop([1.0], [1.0, 2.0])


def test_ratio_spread_and_noise_floor():
    s = ratio_spread([10.0, 12.0, 9.0], [5.0, 5.0, 5.0])
    assert (s.value, s.lo, s.hi, s.n) == (2.0, 1.8, 2.4, 3)
    aa = ratio_spread([1.0, 1.0, 1.0], [0.96, 1.0, 1.05])
    assert noise_floor(aa) == pytest.approx(1 - 1 / 1.05)  # the farther side from 1.0
    with pytest.raises(ValueError):
        ratio_spread([], [])


def test_t_quantile_is_the_exact_95_percent_quantile_for_every_df():
    from scipy.stats import t as student_t

    for df in [*range(1, 121), 200, 500, 10_000]:  # between old table rows and past df 60 too
        assert t_quantile(df) == pytest.approx(student_t.ppf(0.975, df), rel=1e-9), df
    assert t_quantile(11) == pytest.approx(2.2010, abs=1e-4)  # a table rounding up gave 2.179
    assert t_quantile(61) > Z95  # not the normal quantile yet
    assert t_quantile(0) == math.inf  # no degrees of freedom: no finite interval


def test_wilson_stays_inside_0_1_and_handles_one_example():
    for n in range(1, 61):
        for s in range(n + 1):
            e = wilson(s, n)
            assert e.lo >= 0.0 and e.hi <= 1.0, (s, n)  # (16, 16) rounds above 1 unclamped
    for n in range(1, 61):  # the bounds that hold exactly: none right -> 0, all right -> 1
        assert wilson(0, n).lo == 0.0 and wilson(n, n).hi == 1.0, n
    one = wilson(1, 1)  # textbook: 1/1 -> [0.2065, 1]
    assert (one.value, round(one.lo, 4), one.hi, one.n) == (1.0, 0.2065, 1.0, 1)
    empty = wilson(0, 0)
    assert math.isnan(empty.lo) and math.isnan(empty.hi) and empty.n == 0


def test_mean_interval_with_zero_one_and_two_values():
    empty = mean_interval([])
    assert all(math.isnan(x) for x in (empty.value, empty.lo, empty.hi)) and empty.n == 0
    assert mean_interval([0.7]) == Estimate(0.7, -math.inf, math.inf, 1)  # no spread known
    two = mean_interval([1.0, 3.0])  # t(1) = 12.706, sd/sqrt(n) = 1
    assert (two.value, two.n) == (2.0, 2) and two.lo == pytest.approx(2 - 12.7062, abs=1e-4)
    assert two.hi == pytest.approx(2 + 12.7062, abs=1e-4)
    assert mean_interval([1.0, 2.0, 3.0, 4.0]).n == 4


def test_paired_proportion_drop_edges():
    empty = paired_proportion_drop([], [])
    assert all(math.isnan(x) for x in (empty.value, empty.lo, empty.hi)) and empty.n == 0
    one = paired_proportion_drop([True], [False])
    assert (one.value, one.n) == (1.0, 1) and one.lo < 1.0
    with pytest.raises(ValueError, match="3 vs 2"):
        paired_proportion_drop([True] * 3, [True] * 2)
    with pytest.raises(ValueError, match="1 vs 2"):
        paired_mean_drop([1.0], [1.0, 2.0])


@pytest.mark.parametrize("flip", [True, False])
def test_every_answer_flipped_keeps_an_interval_inside_minus_1_1(flip):
    """A variant that gets wrong everything the baseline got right (n = 20): the drop is
    1.0, and with one margin empty the interval is the two Wilson errors combined, not a
    point; the other way round mirrors it."""
    base, variant = [flip] * 20, [not flip] * 20
    d = paired_proportion_drop(base, variant)
    w = wilson(0, 20).hi  # 0.1611
    sign = 1.0 if flip else -1.0
    assert d.value == sign
    assert min(abs(d.lo), abs(d.hi)) == pytest.approx(1 - math.sqrt(2) * w)  # 0.772
    assert max(abs(d.lo), abs(d.hi)) == 1.0 and -1.0 <= d.lo <= d.hi <= 1.0


def test_paired_interval_uses_the_correlation_of_the_pairs():
    """Newcombe's method 10 on a strongly correlated table: large n, so it must agree
    with the paired Wald interval closely (0.1%), which it only does with the right phi
    from all four cells (both right, only base, only variant, both wrong)."""
    n, both, b, c = 20000, 15000, 600, 400
    base = [True] * (both + b) + [False] * (n - both - b)
    var = [True] * both + [False] * b + [True] * c + [False] * (n - both - b - c)
    d = paired_proportion_drop(base, var)
    se = math.sqrt((b + c) - (b - c) ** 2 / n) / n
    assert d.lo == pytest.approx(d.value - Z95 * se, rel=1e-3)
    assert d.hi == pytest.approx(d.value + Z95 * se, rel=1e-3)


def test_ratio_spread_rejects_unpaired_rounds_by_name():
    with pytest.raises(ValueError, match="ratio_spread needs equally many"):
        ratio_spread([1.0, 2.0], [1.0])


def test_noise_floor_takes_the_farther_side_above_1_too():
    aa = Estimate(1.0, 0.99, 1.05, 6)
    assert noise_floor(aa) == pytest.approx(0.05)
    assert noise_floor(Estimate(1.0, 1.0, 1.0, 6)) == 0.0


def test_relative_half_width():
    assert relative_half_width(Estimate(2.0, 1.0, 4.0, 6)) == pytest.approx(0.75)
    assert relative_half_width(Estimate(-2.0, -3.0, -1.0, 6)) == pytest.approx(0.5)
    assert relative_half_width(Estimate(0.0, -1.0, 1.0, 6)) == math.inf
    assert relative_half_width(Estimate(1.0, -math.inf, 1.0, 1)) == math.inf
    assert relative_half_width(Estimate(1.0, 1.0, math.inf, 1)) == math.inf


def test_estimate_formats_and_contains_its_bounds():
    e = Estimate(0.5, 0.4, 0.6, 10)
    assert e.fmt() == "0.5000 [0.4000, 0.6000]"
    assert e.fmt(".1f", scale=100) == "50.0 [40.0, 60.0]"
    assert wilson(0, 0).fmt() == "nan [nan, nan]"  # no examples: said plainly, lower case
    assert e.contains(0.4) and e.contains(0.6) and not e.contains(0.61) and not e.contains(0.39)


def test_median_interval_honours_the_confidence_asked_for():
    values = [float(v) for v in range(1, 21)]
    assert median_interval(values).lo == 6.0  # 95%: ranks 6 and 15 of 20
    narrow = median_interval(values, confidence=0.5)
    assert 6.0 < narrow.lo < 10.5 < narrow.hi < 15.0


def test_order_statistic_functions_refuse_bad_input_by_name():
    with pytest.raises(ValueError, match="n >= 1, got 0"):
        median_ranks(0)
    with pytest.raises(ValueError, match="at least one value"):
        median_interval([])
    with pytest.raises(ValueError, match="paired_ratio needs equally many"):
        paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="paired_ratio needs equally many"):
        paired_ratio([], [])
