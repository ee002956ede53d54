"""Uncertainty of the numbers accelab reports (pure math, no torch/Ray/MLflow).

- A quality metric over a test set carries its sample size and a 95% interval: the
  Wilson score interval for a proportion (accuracy), a t interval for a mean (a loss).
- A drop (baseline minus variant, on the SAME examples) is a paired comparison: Newcombe's
  hybrid score interval for paired proportions (method 10, Newcombe 1998), a paired t
  interval for means. Paired intervals are much tighter than two independent ones
  because both models see the same hard and easy examples.
- A speedup is the median of paired per-block ratios (baseline and variant interleaved in
  short blocks) with a distribution-free 95% interval of that median from order
  statistics: timing noise on a busy machine is skewed and heavy-tailed, so no normal
  approximation is assumed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A point value with a 95% interval [lo, hi] from ``n`` examples (or rounds)."""

    value: float
    lo: float
    hi: float
    n: int

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def fmt(self, spec: str = ".4f", scale: float = 1.0) -> str:
        return (
            f"{format(self.value * scale, spec)} "
            f"[{format(self.lo * scale, spec)}, {format(self.hi * scale, spec)}]"
        )


def t_quantile(df: int) -> float:
    """Two-sided 95% Student t quantile for ``df`` degrees of freedom (exact: a table that
    rounded up to the next tabled df made small-sample intervals up to 1.5% narrow, and
    the normal quantile beyond df 60 up to 2%); infinite without degrees of freedom."""
    if df < 1:
        return math.inf
    # Imported here: scipy.special takes 0.44 s to import, and this module is under every
    # command, including the ones that only read MLflow (report, compare).
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.975))


def wilson(successes: int, n: int, z: float = Z95) -> Estimate:
    """Wilson score interval of a proportion (well-behaved near 0 and 1, unlike Wald)."""
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exactly 0 with no successes and 1 with all (rounding left 5.6e-17 for 0/3), else clamped
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return Estimate(p, lo, hi, n)


def mean_interval(values: Sequence[float]) -> Estimate:
    """Mean with a t interval (the values are per-example numbers, e.g. losses)."""
    n = len(values)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = statistics.fmean(values)
    if n == 1:
        return Estimate(mean, -math.inf, math.inf, 1)
    half = t_quantile(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def paired_proportion_drop(base: Sequence[bool], variant: Sequence[bool]) -> Estimate:
    """Drop p_base - p_variant on the same examples, with Newcombe's method-10 interval.

    ``base[i]`` / ``variant[i]``: whether each model got example ``i`` right."""
    if len(base) != len(variant):
        raise ValueError(f"paired samples differ in size: {len(base)} vs {len(variant)}")
    n = len(base)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    a = sum(1 for b, v in zip(base, variant, strict=True) if b and v)
    b_only = sum(1 for b, v in zip(base, variant, strict=True) if b and not v)
    v_only = sum(1 for b, v in zip(base, variant, strict=True) if v and not b)
    d = n - a - b_only - v_only
    p1, p2 = (a + b_only) / n, (a + v_only) / n
    w1, w2 = wilson(a + b_only, n), wilson(a + v_only, n)
    denom = (a + b_only) * (v_only + d) * (a + v_only) * (b_only + d)
    phi = (a * d - b_only * v_only) / math.sqrt(denom) if denom > 0 else 0.0
    diff = p1 - p2
    delta = math.sqrt(
        max(0.0, (p1 - w1.lo) ** 2 - 2 * phi * (p1 - w1.lo) * (w2.hi - p2) + (w2.hi - p2) ** 2)
    )
    eps = math.sqrt(
        max(0.0, (w1.hi - p1) ** 2 - 2 * phi * (w1.hi - p1) * (p2 - w2.lo) + (p2 - w2.lo) ** 2)
    )
    return Estimate(diff, max(-1.0, diff - delta), min(1.0, diff + eps), n)


def paired_mean_drop(base: Sequence[float], variant: Sequence[float]) -> Estimate:
    """Mean of ``base[i] - variant[i]`` with a paired t interval."""
    if len(base) != len(variant):
        raise ValueError(f"paired samples differ in size: {len(base)} vs {len(variant)}")
    return mean_interval([b - v for b, v in zip(base, variant, strict=True)])


def median_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """1-based ranks (j, n + 1 - j) of the order statistics that bound the median with at
    least ``confidence`` coverage, for any continuous distribution: the largest j with
    P(Binomial(n, 1/2) < j) <= (1 - confidence) / 2. With n too small for that coverage
    (n < 6 at 95%) the widest interval there is: (1, n)."""
    if n < 1:
        raise ValueError(f"median_ranks needs n >= 1, got {n}")
    tail, cdf, j = (1.0 - confidence) / 2.0, 0.0, 0
    while j < n // 2:
        cdf += math.comb(n, j) / (1 << n)  # P(B <= j): exact ints, no float overflow at n > 1023
        if cdf > tail:
            break
        j += 1
    j = max(j, 1)
    return j, n + 1 - j


def median_interval(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Median with its distribution-free (order-statistic) interval."""
    if not values:
        raise ValueError("median_interval needs at least one value")
    xs = sorted(values)
    j, k = median_ranks(len(xs), confidence)
    return Estimate(statistics.median(xs), xs[j - 1], xs[k - 1], len(xs))


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> Estimate:
    """Paired ratios ``num[i] / den[i]`` (baseline ms / variant ms in the same block):
    their median with the order-statistic 95% interval of that median."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("paired_ratio needs equally many (>= 1) numerators and denominators")
    return median_interval([n / d for n, d in zip(numerators, denominators, strict=True)])


def relative_half_width(e: Estimate) -> float:
    """Half the interval's width relative to its point value (inf when undefined)."""
    if not e.value or not math.isfinite(e.lo) or not math.isfinite(e.hi):
        return math.inf
    return (e.hi - e.lo) / 2.0 / abs(e.value)


def ratio_spread(numerators: Sequence[float], denominators: Sequence[float]) -> Estimate:
    """Per-round ratios ``num[i] / den[i]`` (e.g. baseline ms / variant ms): their median
    and [min, max]. With few rounds a min-max range is the honest spread to show."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("ratio_spread needs equally many (>= 1) numerators and denominators")
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True)]
    return Estimate(statistics.median(ratios), min(ratios), max(ratios), len(ratios))


def noise_floor(aa: Estimate) -> float:
    """Relative speed noise from an A/A control (a model timed against itself): how far
    its paired ratios (the interval of their median) strayed from 1.0. Two speedups closer
    than this are a tie."""
    return max(aa.hi - 1.0, 1.0 - aa.lo, abs(aa.value - 1.0), 0.0)
