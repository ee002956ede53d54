"""The block-interleaved timing method's statistics: the order-statistic interval of a
median (exact binomial coverage), the stopping rule, and a timed run that must stop on
precision or on its time budget, with p50s and speedup from the same blocks."""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass

import pytest
import torch

from accelab.config.schema import MeasureConfig
from accelab.measure.latency import (
    calls_per_block,
    precise_enough,
    speedup,
    time_blocks,
    time_runners,
    widest_half_width,
)
from accelab.stats import median_interval, median_ranks, noise_floor, paired_ratio


def _below(n: int, j: int) -> float:
    """P(Binomial(n, 1/2) < j)."""
    return sum(math.comb(n, i) for i in range(j)) / 2.0**n


@pytest.mark.parametrize(("n", "ranks"), [(6, (1, 6)), (10, (2, 9)), (20, (6, 15)),
                                          (50, (18, 33)), (100, (40, 61))])  # fmt: skip
def test_median_ranks_match_the_published_table(n, ranks):
    assert median_ranks(n) == ranks


@pytest.mark.parametrize("n", range(6, 301))
def test_median_ranks_cover_95_and_are_the_tightest_that_do(n):
    j, k = median_ranks(n)
    assert k == n + 1 - j
    assert 1 - 2 * _below(n, j) >= 0.95  # P(x_(j) <= median <= x_(k)) for any distribution
    assert 1 - 2 * _below(n, j + 1) < 0.95  # one rank closer would not


def test_too_few_values_give_the_widest_interval():
    assert median_ranks(5) == (1, 5) and median_ranks(1) == (1, 1)
    e = median_interval([3.0, 1.0, 2.0])
    assert (e.value, e.lo, e.hi, e.n) == (2.0, 1.0, 3.0, 3)
    with pytest.raises(ValueError):
        median_ranks(0)


def test_median_interval_picks_the_order_statistics():
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    e = median_interval(values)
    assert (e.value, e.lo, e.hi, e.n) == (50.5, 40.0, 61.0, 100)


def test_paired_ratio_pairs_by_index():
    e = paired_ratio([2.0] * 10, [1.0, 2.0, 4.0, 1.0, 2.0, 4.0, 1.0, 2.0, 4.0, 1.0])
    assert e.value == 1.0 and (e.lo, e.hi) == (0.5, 2.0)  # ranks 2 and 9 of the 10 ratios
    aa = paired_ratio([1.0] * 20, [1.0 + 0.01 * ((i % 5) - 2) for i in range(20)])
    assert noise_floor(aa) == pytest.approx(1 / 0.99 - 1)


def test_stopping_rule_needs_enough_blocks_and_a_narrow_interval():
    flat = [[1.0] * 5, [1.0] * 5]
    assert not precise_enough(flat, 0.05, min_blocks=1)  # 5 blocks: no 95% interval yet
    assert precise_enough([[1.0] * 6, [1.0] * 6], 0.05, min_blocks=1)
    assert not precise_enough([[1.0] * 6, [1.0] * 6], 0.05, min_blocks=7)
    noisy = [[1.0] * 40, [1.0 + (0.2 if i % 2 else -0.2) for i in range(40)]]
    assert widest_half_width(noisy) > 0.1
    assert not precise_enough(noisy, 0.1, min_blocks=6)
    assert precise_enough(noisy, 0.5, min_blocks=6)
    # every pair counts: a third runner that is noisy against the second one stops nothing
    three = [[1.0] * 40, [1.0] * 40, noisy[1]]
    assert not precise_enough(three, 0.1, min_blocks=6)


@dataclass
class Sleeper:
    """A runner whose call takes ``ms`` of wall time (sleeping), plus ``jitter`` of it at
    random: a real clock, a cost the test controls."""

    ms: float
    jitter: float = 0.0
    backend: str = "sleep"
    device: str = "cpu"
    threads: int = 1
    simulated: bool = False

    def active(self):
        import contextlib

        return contextlib.nullcontext()

    def __call__(self, x):
        time.sleep(self.ms / 1000.0 * (1.0 + self.jitter * float(torch.rand(()))))
        return x


def test_blocks_stop_on_precision_and_the_speedup_agrees_with_the_p50s():
    """Real sleeping runners (the virtual-clock tests pin the exact rule): what holds
    whatever the machine's load adds to each sleep."""
    x = torch.zeros(1, 1)
    start = time.perf_counter()
    slow, fast = time_blocks([Sleeper(4.0), Sleeper(2.0)], x, warmup=1, block_calls=3,
                             min_blocks=10, target_precision=0.2, max_seconds=30)  # fmt: skip
    elapsed = time.perf_counter() - start
    s = speedup(slow, fast)
    assert s.n == len(slow.rounds_p50_ms) == len(fast.rounds_p50_ms) >= 10
    if elapsed < 30:  # only the 30 s budget's expiry stops it short of the precision asked
        assert widest_half_width([slow.rounds_p50_ms, fast.rounds_p50_ms]) <= 0.2
    assert s.value > 1.0  # the 4 ms sleeper is the slower, whatever load adds to each sleep
    # the printed p50s come from the same blocks, and their ratio lies in the interval
    assert slow.p50_ms == statistics.median(slow.rounds_p50_ms)
    assert s.lo <= slow.p50_ms / fast.p50_ms <= s.hi
    assert slow.p95_ms >= slow.p50_ms and slow.method == "blocks"


@dataclass
class Stamped(Sleeper):
    """A Sleeper that records when each of its calls started."""

    starts: list[float] | None = None

    def __call__(self, x):
        self.starts.append(time.perf_counter())
        return super().__call__(x)


def test_blocks_stop_on_the_time_budget_when_never_precise():
    """It stops at the first block boundary past the budget: at most the one block under
    way when the budget ran out finishes after it (a bound on the timer's own work, which
    holds on a loaded machine; a wall-clock ceiling would test the machine)."""
    x = torch.zeros(1, 1)
    starts: list[float] = []
    start = time.perf_counter()
    a, b = time_blocks([Stamped(1.0, jitter=3.0, starts=starts),
                        Stamped(1.0, jitter=3.0, starts=starts)], x, warmup=0,
                       block_calls=1, min_blocks=6, target_precision=1e-6, max_seconds=0.3)  # fmt: skip
    assert time.perf_counter() - start >= 0.3
    late = [t for t in starts if t >= starts[0] + 0.3]
    assert len(late) <= 1  # a block is 2 calls; only its second may start past the budget
    assert len(a.rounds_p50_ms) == len(b.rounds_p50_ms) == len(starts) // 2 >= 6


def test_order_rotates_every_block():
    seen: list[str] = []

    @dataclass
    class Named(Sleeper):
        name: str = ""

        def __call__(self, x):
            seen.append(self.name)
            return x

    runners = [Named(0.0, name="a"), Named(0.0, name="b"), Named(0.0, name="c")]
    time_blocks(runners, torch.zeros(1), warmup=0, block_calls=1, min_blocks=6,
                target_precision=1.0, max_seconds=30)  # fmt: skip
    assert seen[:9] == list("abcbcacab")


def test_a_block_counts_its_fastest_call():
    """Two calls in three are disturbed (5x slower): each block of 3 keeps the undisturbed one,
    so p50 is the undisturbed cost and the A/A ratio stays 1.0; p95 shows the disturbance."""
    x = torch.zeros(1, 1)

    @dataclass
    class Hiccup(Sleeper):
        count: int = 0

        def __call__(self, x):
            self.count += 1
            time.sleep(self.ms / 1000.0 * (1.0 if self.count % 3 == 0 else 5.0))
            return x

    a, b = time_blocks([Hiccup(2.0), Hiccup(2.0)], x, warmup=0, block_calls=3, min_blocks=8,
                       target_precision=0.05, max_seconds=5)  # fmt: skip
    assert a.p50_ms < 4.0 and b.p50_ms < 4.0
    assert a.p95_ms > 8.0
    assert abs(speedup(a, b).value - 1.0) < 0.2


def test_median_ranks_hold_for_thousands_of_blocks():
    """A long measurement (thousands of blocks) must not overflow: 2.0**n does past 1023."""
    j, k = median_ranks(5000)
    assert k == 5001 - j and 2400 < j < 2460  # ~ n/2 - 1.96 sqrt(n)/2


@pytest.mark.parametrize(("fastest", "block_ms", "calls"), [
    ([2.0, 2.0], 30.0, 5),  # a fast model keeps block_calls
    ([4.0, 4.0], 30.0, 3),  # 3 rounds of 8 ms fit in 30 ms, 4 would not
    ([28.0, 28.0], 30.0, 1),  # the language model: one call each per block, never zero
    ([28.0, 28.0], 0.0, 5),  # 0 = always block_calls
    ([math.inf, 2.0], 30.0, 5),  # no warm-up, no call time: block_calls
])  # fmt: skip
def test_slow_models_get_fewer_calls_per_block(fastest, block_ms, calls):
    assert calls_per_block(fastest, 5, block_ms) == calls


def test_a_slow_pair_is_timed_one_call_per_block_and_says_so():
    """Two 20 ms runners against a 30 ms block: 1 call each per block, so 6 blocks are 6
    calls each (5 would be 30), and the method names the block size used."""
    a, b = Stamped(20.0, starts=[]), Stamped(20.0, starts=[])
    la, lb = time_blocks([a, b], torch.zeros(1, 1), warmup=1, block_calls=5, min_blocks=6,
                         target_precision=1.0, max_seconds=30, block_ms=30.0)  # fmt: skip
    assert len(a.starts) == len(b.starts) == 1 + 6 == 1 + len(la.rounds_p50_ms)
    assert la.method == lb.method == "blocks, 1 call per block"


@dataclass
class PolicyProbe(Sleeper):
    """A runner that records the scheduling policy its calls ran under."""

    policies: list[int] | None = None

    def __call__(self, x):
        self.policies.append(os.sched_getscheduler(0))
        return x


needs_sched = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="no sched API")


@needs_sched
def test_realtime_priority_is_applied_while_timing_and_restored():
    before = os.sched_getscheduler(0)
    probe = PolicyProbe(0.0, policies=[])
    (lat,) = time_blocks([probe], torch.zeros(1), warmup=2, block_calls=2, min_blocks=6,
                         target_precision=1.0, max_seconds=30, realtime=True)  # fmt: skip
    assert os.sched_getscheduler(0) == before  # restored
    if "real-time priority" in lat.method:  # the OS allowed it: every call ran under it
        assert set(probe.policies) == {os.SCHED_FIFO}
    else:  # refused (no privilege): said so, and the calls ran at normal priority
        assert "normal priority (real-time refused" in lat.method
        assert os.SCHED_FIFO not in probe.policies


@needs_sched
def test_realtime_priority_only_for_single_threaded_cpu_runners_and_when_asked():
    multi = PolicyProbe(0.0, threads=2, policies=[])
    one = PolicyProbe(0.0, policies=[])
    (_, lat) = time_blocks([multi, one], torch.zeros(1), warmup=0, block_calls=1, min_blocks=6,
                           target_precision=1.0, max_seconds=30, realtime=True)  # fmt: skip
    assert os.SCHED_FIFO not in multi.policies + one.policies and lat.method == "blocks"
    off = MeasureConfig(realtime=False, warmup=1, min_blocks=6, target_precision=1.0)
    (lat,) = time_runners([one], torch.zeros(1), off)
    assert os.SCHED_FIFO not in one.policies and "priority" not in lat.method


def test_primed_timing_times_each_call_right_after_an_untimed_call_of_its_own():
    """Three runners: each timed call must follow a call of the same runner (never another
    runner's), and only every second call is timed."""
    seen: list[tuple[str, float]] = []

    @dataclass
    class Named(Sleeper):
        name: str = ""

        def __call__(self, x):
            seen.append((self.name, time.perf_counter()))
            return x

    runners = [Named(0.0, name=n) for n in "abc"]
    lats = time_blocks(runners, torch.zeros(1), warmup=0, block_calls=2, min_blocks=6,
                       target_precision=1.0, max_seconds=30, primed=True)  # fmt: skip
    names = "".join(n for n, _ in seen)
    assert names[:12] == "aabbccaabbcc" and names[12:24] == "bbccaabbccaa"
    assert len(seen) == 3 * 2 * 2 * len(lats[0].rounds_p50_ms)  # 3 runners, 2 calls, primed
    assert lats[0].method == "blocks, primed"
