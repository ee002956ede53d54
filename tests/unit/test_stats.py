"""The intervals behind every reported number: right formulas, right coverage."""

from __future__ import annotations

import math
import random

import pytest

from accelab.stats import (
    mean_interval,
    noise_floor,
    paired_mean_drop,
    paired_proportion_drop,
    ratio_spread,
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
