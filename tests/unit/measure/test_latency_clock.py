"""The timing logic of ``accelab.measure.latency`` on a virtual clock that each runner
advances by a cost the test chooses (exact and load-free, milliseconds; the mutation group
``latency`` runs these per mutant): what is timed (warm-up calls are not), in which order,
what a block, a round, a p50 and a p95 are, when blocks stop (precision, budget, checks
every ~10%), and that the measure config's knobs reach the timer. The real-clock tests
with sleeping runners are in test_latency_stats.py."""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
import torch

from accelab.config.schema import MeasureConfig
from accelab.measure.latency import (
    Latency,
    _timed_calls,
    pinned_to_one_cpu,
    speedup,
    time_alternating,
    time_blocks,
    time_round,
    time_runners,
    timing,
    widest_half_width,
)
from accelab.stats import median_interval, paired_ratio, relative_half_width

BATCH = torch.zeros(4, 1)


@dataclass
class Clock:
    """Seconds as an exact fraction, so that no rounding accumulates over many calls."""

    now: Fraction = Fraction(0)

    def __call__(self) -> Fraction:
        return self.now


@dataclass
class Costly:
    """A runner whose n-th call (from 0, warm-up included) takes ``cost(n)`` ms of virtual
    time; every call is logged in ``log`` under ``name``, with whether it ran active."""

    clock: Clock
    cost: Callable[[int], float]
    name: str = "r"
    log: list = field(default_factory=list)
    backend: str = "virtual"
    device: str = "cpu"
    threads: int = 1
    simulated: bool = False
    calls: int = 0
    depth: int = 0

    @contextlib.contextmanager
    def active(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def __call__(self, x):
        assert x is BATCH
        self.log.append((self.name, self.depth > 0))
        self.clock.now += Fraction(self.cost(self.calls)) / 1000
        self.calls += 1
        return x


def constant(ms: float) -> Callable[[int], float]:
    return lambda n: ms


def test_each_call_is_timed_on_its_own_in_milliseconds():
    clock = Clock()
    r = Costly(clock, lambda n: [1.5, 4.0, 0.25][n])
    assert _timed_calls(r, BATCH, 3, clock) == pytest.approx([1.5, 4.0, 0.25])


def test_a_round_times_its_repeats_after_untimed_warmup_calls():
    clock = Clock()
    # three warm-up calls of 1000 ms, then 1, 2, ..., 20 ms
    r = Costly(clock, lambda n: 1000.0 if n < 3 else float(n - 2))
    p50, p95 = time_round(r, BATCH, warmup=3, repeats=20, clock=clock)
    assert (p50, p95) == pytest.approx((10.5, 19.05))  # linear interpolation, as numpy
    assert r.calls == 23 and all(active for _, active in r.log)
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        time_round(r, BATCH, warmup=0, repeats=0, clock=clock)


def test_rounds_alternate_the_order_and_take_the_median_round():
    clock, log = Clock(), []
    a = Costly(clock, lambda n: [1.0, 3.0, 2.0, 9.0, 4.0][n // 2], "a", log)  # 2 calls a round
    b = Costly(clock, constant(5.0), "b", log)
    la, lb = time_alternating([a, b], BATCH, rounds=5, warmup=0, repeats=2, clock=clock)
    assert [n for n, _ in log] == list("aabbbbaaaabbbbaaaabb")  # A B, B A, A B, ...
    assert la.rounds_p50_ms == pytest.approx((1.0, 3.0, 2.0, 9.0, 4.0))
    assert la.p50_ms == pytest.approx(3.0) and lb.p50_ms == pytest.approx(5.0)
    assert la.p95_ms == pytest.approx(3.0) and la.batch_size == 4 and la.method == "rounds"
    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        time_alternating([a], BATCH, rounds=0, clock=clock)


def test_a_rounds_p95_is_the_median_of_the_rounds_p95s():
    clock = Clock()
    # each round: 19 calls of 1 ms and one of 101 ms -> p95 = 1 + 0.05 * 19 * 100 = 6.0 ms
    r = Costly(clock, lambda n: 101.0 if n % 20 == 19 else 1.0)
    (lat,) = time_alternating([r], BATCH, rounds=3, warmup=0, repeats=20, clock=clock)
    assert lat.p50_ms == pytest.approx(1.0) and lat.p95_ms == pytest.approx(6.0)


def test_a_block_is_each_runners_fastest_call_and_the_p95_is_over_every_call():
    clock, log = Clock(), []
    # a: calls 2, 7, 3 ms in every block of 3 (after 2 warm-ups); b: always 4 ms
    a = Costly(clock, lambda n: 0.0 if n < 2 else [2.0, 7.0, 3.0][(n - 2) % 3], "a", log)
    b = Costly(clock, constant(4.0), "b", log)
    la, lb = time_blocks([a, b], BATCH, warmup=2, block_calls=3, min_blocks=8,
                         target_precision=0.5, max_seconds=60, clock=clock)  # fmt: skip
    assert la.rounds_p50_ms == pytest.approx((2.0,) * 8) and la.p50_ms == pytest.approx(2.0)
    assert la.p95_ms == pytest.approx(7.0)  # 24 calls, a third of them 7 ms
    assert lb.rounds_p50_ms == pytest.approx((4.0,) * 8) and lb.p95_ms == pytest.approx(4.0)
    assert (la.batch_size, la.method) == (4, "blocks")
    assert log[:4] == [("a", True), ("a", True), ("b", True), ("b", True)]  # warm-ups
    # then a b a b a b (block 0, a leads), b a b a b a (block 1, b leads), ...
    assert "".join(n for n, _ in log[4:16]) == "ababab" + "bababa"
    assert all(active for _, active in log)
    assert speedup(lb, la).value == pytest.approx(2.0)  # b's time / a's time, per block


def test_blocks_stop_at_the_first_check_where_every_interval_is_narrow_enough():
    clock = Clock()
    # block ratios 1.0 for 12 blocks, then exact: the interval narrows as blocks come
    ratios = [1.0 + (0.5 if i % 2 else -0.3) for i in range(12)] + [1.0] * 200
    a = Costly(clock, lambda n: ratios[n])
    b = Costly(clock, constant(1.0))
    la, _ = time_blocks([a, b], BATCH, warmup=0, block_calls=1, min_blocks=6,
                        target_precision=0.1, max_seconds=1e9, clock=clock)  # fmt: skip
    n = len(la.rounds_p50_ms)
    # checked at 6, 7, 8, ... (n // 10 = 0 -> every block), then every n // 10 blocks
    checks, k = [], 6
    while k <= 200:
        checks.append(k)
        k += max(1, k // 10)
    first = next(c for c in checks if widest_half_width([ratios[:c], [1.0] * c]) <= 0.1)
    assert n == first


@pytest.mark.parametrize(("min_blocks", "blocks"), [(3, 6), (6, 6), (9, 9)])
def test_exact_timings_stop_at_min_blocks_but_never_below_six(min_blocks, blocks):
    clock = Clock()
    a, b = Costly(clock, constant(2.0)), Costly(clock, constant(1.0))
    la, lb = time_blocks([a, b], BATCH, warmup=0, block_calls=2, min_blocks=min_blocks,
                         target_precision=1e-9, max_seconds=1e9, clock=clock)  # fmt: skip
    assert len(la.rounds_p50_ms) == len(lb.rounds_p50_ms) == blocks


def test_blocks_stop_at_the_first_block_that_ends_past_the_budget():
    clock = Clock()
    noisy = Costly(clock, lambda n: 1.0 if n % 2 else 3.0)  # never precise against b
    b = Costly(clock, constant(1.0))
    la, _ = time_blocks([noisy, b], BATCH, warmup=5, block_calls=1, min_blocks=6,
                        target_precision=1e-9, max_seconds=0.1, clock=clock)  # fmt: skip
    # warm-up (5 x (1|3) + 5 x 1 ms) is not budgeted; each block takes 2 or 4 ms:
    # 0.1 s are first reached after 33 blocks (16 x 4 + 17 x 2 = 98 ms, then 102 ms)
    assert len(la.rounds_p50_ms) == 34
    exact = Costly(clock, constant(1.0))
    lb, _ = time_blocks([exact, Costly(clock, constant(1.0))], BATCH, warmup=0, block_calls=1,
                        min_blocks=100, target_precision=1.0, max_seconds=0.0085, clock=clock)  # fmt: skip
    assert len(lb.rounds_p50_ms) == 5  # the budget wins even before a 95% interval exists


def test_block_calls_below_one_are_refused():
    with pytest.raises(ValueError, match="block_calls must be >= 1, got 0"):
        time_blocks([Costly(Clock(), constant(1.0))], BATCH, block_calls=0)


def test_one_runner_stops_on_its_own_median_interval():
    blocks = [[1.0, 1.2, 0.9, 1.1, 1.0, 1.3, 0.8]]
    assert widest_half_width(blocks) == relative_half_width(median_interval(blocks[0]))
    pairs = [[1.0] * 7, [2.0] * 7, blocks[0]]
    assert widest_half_width(pairs) == max(
        relative_half_width(paired_ratio(x, y))
        for x, y in ((pairs[0], pairs[1]), (pairs[0], pairs[2]), (pairs[1], pairs[2]))
    )


def test_pinning_uses_one_allowed_cpu_and_restores_the_others():
    with pinned_to_one_cpu(False) as cpu:
        assert cpu is None
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this OS")
    allowed = os.sched_getaffinity(0)
    with pinned_to_one_cpu(True) as cpu:
        assert cpu == max(allowed) and os.sched_getaffinity(0) == {cpu}
    assert os.sched_getaffinity(0) == allowed
    clock = Clock()
    (lat,) = time_blocks([Costly(clock, constant(1.0))], BATCH, warmup=0, min_blocks=6,
                         target_precision=1.0, pin_cpu=True, clock=clock)  # fmt: skip
    assert lat.method == f"blocks, pinned to cpu {max(allowed)}"


def test_the_measure_config_reaches_the_timer():
    clock = Clock()
    r = Costly(clock, lambda n: float(n % 3))
    s = MeasureConfig(method="rounds", rounds=3, warmup=2, repeats=4)
    (lat,) = time_runners([r], BATCH, s, clock)
    assert len(lat.rounds_p50_ms) == 3 and r.calls == 3 * (2 + 4) and lat.method == "rounds"
    r = Costly(clock, lambda n: 5.0 if n < 3 else 1.0 + n % 2)
    s = MeasureConfig(warmup=3, block_calls=2, min_blocks=7, target_precision=0.9,
                      max_seconds=50.0, pin_cpu=False)  # fmt: skip
    (lat,) = time_runners([r], BATCH, s, clock)
    # primed (the default): an untimed call (2 ms) before each timed one (1 ms)
    assert (
        len(lat.rounds_p50_ms) == 7
        and r.calls == 3 + 7 * 2 * 2
        and lat.p50_ms == pytest.approx(1.0)
    )
    s = MeasureConfig(warmup=1, block_calls=1, min_blocks=6, target_precision=1e-9,
                      max_seconds=0.0045, primed=False)  # fmt: skip
    (lat,) = time_runners([Costly(clock, lambda n: 1.0 + n % 2)], BATCH, s, clock)
    assert len(lat.rounds_p50_ms) == 3  # 2 + 1 + 2 ms (after a 1 ms warm-up): the budget
    if hasattr(os, "sched_setaffinity"):
        s = MeasureConfig(warmup=1, min_blocks=6, target_precision=1.0, pin_cpu=True)
        (lat,) = time_runners([Costly(clock, constant(1.0))], BATCH, s, clock)
        assert lat.method.startswith("blocks, pinned")


def test_timing_says_how_it_times():
    assert timing(MeasureConfig(method="rounds", rounds=4, repeats=30)) == (
        "4 alternating rounds x 30 runs"
    )
    s = MeasureConfig(block_calls=6, target_precision=0.025, max_seconds=2.5)
    assert timing(s) == (
        "interleaved blocks of up to 6 runs (30 ms), primed, real-time priority where allowed, "
        "until +-2.5% or 2.5 s"
    )
    s = MeasureConfig(block_ms=0, primed=False, realtime=False, pin_cpu=True)
    assert timing(s) == "interleaved blocks of 5 runs, pinned to one cpu, until +-1% or 5 s"


def test_throughput_is_the_batch_over_the_median_time_and_speedup_pairs_blocks():
    lat = Latency(p50_ms=8.0, p95_ms=9.0, rounds_p50_ms=(8.0,), batch_size=64)
    assert lat.throughput_sps == pytest.approx(8000.0)
    base = Latency(4.0, 5.0, (4.0, 6.0, 3.0, 4.0, 8.0, 5.0), 1)
    fast = Latency(2.0, 3.0, (2.0, 2.0, 3.0, 1.0, 4.0, 2.5), 1)
    s = speedup(base, fast)
    assert s == paired_ratio(base.rounds_p50_ms, fast.rounds_p50_ms)
    assert s.value == pytest.approx(statistics.median([2.0, 3.0, 1.0, 4.0, 2.0, 2.0]))
