"""Edges of ``accelab.measure.latency`` that its mutation group found untested (issue #18):
one round / one repeat, the measure config's every knob reaching the timer (the clock,
block_ms, target_precision, realtime), which runners may run at real-time priority, the
stopping rule's edges (an interval exactly as wide as the target, a block ending exactly at
the budget, checks every n // 10 blocks), the calls per block named in the method.
Virtual clock and runners from test_latency_clock.py: exact and load-free."""

from __future__ import annotations

import os

import pytest

from accelab.config.schema import MeasureConfig
from accelab.measure.latency import (
    calls_per_block,
    precise_enough,
    realtime_allowed,
    time_alternating,
    time_blocks,
    time_round,
    time_runners,
    widest_half_width,
)
from tests.unit.measure.test_latency_clock import BATCH, Clock, Costly, constant


def test_one_round_of_one_repeat_is_enough():
    clock = Clock()
    assert time_round(Costly(clock, constant(3.0)), BATCH, 0, 1, clock) == pytest.approx((3.0, 3.0))
    (lat,) = time_alternating([Costly(clock, constant(2.0))], BATCH, rounds=1, warmup=0,
                              repeats=1, clock=clock)  # fmt: skip
    assert lat.rounds_p50_ms == pytest.approx((2.0,)) and lat.p95_ms == pytest.approx(2.0)


def test_rounds_from_the_config_are_timed_on_the_given_clock():
    clock = Clock()
    r = Costly(clock, lambda n: 1.0 + n)  # warm-up 1, 2; then 3, 4 | 5, 6 (warm) 7, 8 ...
    s = MeasureConfig(method="rounds", rounds=2, warmup=2, repeats=2)
    (lat,) = time_runners([r], BATCH, s, clock)
    assert lat.rounds_p50_ms == pytest.approx((3.5, 7.5))


def test_block_ms_from_the_config_gives_a_slow_model_one_call_per_block():
    clock = Clock()
    slow = [Costly(clock, constant(20.0)), Costly(clock, constant(20.0))]
    s = MeasureConfig(warmup=1, block_calls=5, block_ms=30.0, min_blocks=6,
                      target_precision=1.0, realtime=False, primed=False)  # fmt: skip
    la, _ = time_runners(slow, BATCH, s, clock)
    assert la.method == "blocks, 1 call per block" and slow[0].calls == 1 + 6


def test_target_precision_from_the_config_decides_when_blocks_stop():
    """Block ratios of 1 and 3 in turn: +-100% is met at the first check (6 blocks), the
    default +-1% never (the 1 s virtual budget ends it)."""
    s = MeasureConfig(warmup=1, block_calls=1, block_ms=0.0, min_blocks=6, max_seconds=1.0,
                      realtime=False, primed=False)  # fmt: skip
    lengths = []
    for precision in (1.0, s.target_precision):
        clock = Clock()
        noisy = Costly(clock, lambda n: 1.0 if n % 2 else 3.0)
        la, _ = time_runners([noisy, Costly(clock, constant(1.0))], BATCH,
                             s.model_copy(update={"target_precision": precision}), clock)  # fmt: skip
        lengths.append(len(la.rounds_p50_ms))
    assert lengths[0] == 6 and lengths[1] > 100


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="no sched API")
def test_realtime_from_the_config_reaches_the_timer():
    clock = Clock()
    s = MeasureConfig(warmup=1, block_calls=1, min_blocks=6, target_precision=1.0,
                      realtime=True, primed=False)  # fmt: skip
    (lat,) = time_runners([Costly(clock, constant(1.0))], BATCH, s, clock)
    assert "priority" in lat.method  # applied, or refused and said so


def test_realtime_only_when_every_runner_is_single_threaded_on_the_cpu():
    def runner(threads: int = 1, device: str = "cpu") -> Costly:
        return Costly(Clock(), constant(1.0), threads=threads, device=device)

    assert realtime_allowed([runner(), runner()]) and realtime_allowed([])
    assert not realtime_allowed([runner(), runner(threads=2)])
    assert not realtime_allowed([runner(threads=2), runner()])
    assert not realtime_allowed([runner(device="cuda")])
    assert not realtime_allowed([runner(), runner(device="cuda:1")])
    assert realtime_allowed([runner(device="cpu:0")])


def test_an_interval_exactly_as_wide_as_the_target_is_precise_enough():
    blocks = [[1.0, 1.2, 0.9, 1.1, 1.0, 1.3, 0.8], [1.0] * 7]
    width = widest_half_width(blocks)
    assert precise_enough(blocks, width, 6) and not precise_enough(blocks, width * 0.99, 6)
    assert not precise_enough([], 1.0, 1)  # no runners: nothing measured


def test_a_block_ending_exactly_at_the_budget_is_the_last():
    clock = Clock()  # 250 ms blocks against a 1 s budget (both exact in binary)
    (lat,) = time_blocks([Costly(clock, constant(250.0))], BATCH, warmup=0, block_calls=1,
                         min_blocks=100, target_precision=1.0, max_seconds=1.0, clock=clock)  # fmt: skip
    assert len(lat.rounds_p50_ms) == 4


@pytest.mark.parametrize("noisy", [5, 25])
def test_precision_is_checked_every_block_up_to_ten_then_every_n_over_ten(noisy):
    """Noisy block ratios for ``noisy`` blocks, then exact ones: the blocks stop at the first
    check (6, 7, ..., 10, 11, ..., 20, 22, 24, ...: n + max(1, n // 10)) that is precise.
    (5 stops at 15, where checking every other block would stop at 16; 25 at 42, where
    n / 10 would stop at 41 and n // 11 at 40.)"""
    clock = Clock()
    ratios = [1.0 + (0.5 if i % 2 else -0.3) for i in range(noisy)] + [1.0] * 300
    a, b = Costly(clock, lambda n: ratios[n]), Costly(clock, constant(1.0))
    la, _ = time_blocks([a, b], BATCH, warmup=0, block_calls=1, min_blocks=6,
                        target_precision=0.1, max_seconds=1e9, clock=clock)  # fmt: skip
    checks, k = [], 6
    while k <= 300:
        checks.append(k)
        k += max(1, k // 10)
    first = next(c for c in checks if widest_half_width([ratios[:c], [1.0] * c]) <= 0.1)
    assert len(la.rounds_p50_ms) == first == {5: 15, 25: 42}[noisy]


@pytest.mark.parametrize(("block_ms", "method"), [
    (0.5, "blocks, 2 calls per block"),  # 0.5 ms fits two rounds of 0.1 + 0.1 ms
    (0.3, "blocks, 1 call per block"),
    (0.0, "blocks"),  # 0: always block_calls, not named
])  # fmt: skip
def test_the_method_names_the_calls_per_block_for_any_positive_block_ms(block_ms, method):
    clock = Clock()
    runners = [Costly(clock, constant(0.1)), Costly(clock, constant(0.1))]
    la, _ = time_blocks(runners, BATCH, warmup=1, block_calls=5, min_blocks=6,
                        target_precision=1.0, clock=clock, block_ms=block_ms)  # fmt: skip
    assert la.method == method


def test_a_zero_warm_up_time_keeps_block_calls():
    """A call faster than the clock's resolution reads 0 ms: no round time to divide by."""
    assert calls_per_block([0.0, 0.0], 5, 30.0) == 5
