"""Latency with real kernels after warm-up, robust to other work on the machine.

``blocks`` (the default): the runners are interleaved call by call (A B A B ...) in short
blocks of a few calls each, the order rotated every block, so that a slow phase of the machine (a busy SMT sibling, a lower clock)
lands on all of them alike within milliseconds instead of on whichever ran during a long
round. Each block gives every runner one number: its fastest call in that block, because
other work on the machine only ever adds time (a preempted call is slower, never faster),
and of a few adjacent calls one usually runs undisturbed. (The median of the block's calls
read A/A floors of 30-150% beside two busy processes; the minimum 1.5-4%, measured with
benchmarks/noise.py.) A speedup is the median of the paired per-block ratios with an
order-statistic 95% interval (``accelab.stats.paired_ratio``); blocks are added until every
such interval is narrow enough (``target_precision``) or the time budget (``max_seconds``)
is spent. A runner's p50 is the median of its block values, from the same blocks as the
speedup, so the ratio of two printed p50s lies in (or next to) the speedup's interval; its
p95 is over every timed call, where the load shows.

Two things keep the blocks true on a busy machine (``measure.realtime``, ``measure.block_ms``;
both measured with benchmarks/noise.py). The timing thread runs at real-time priority
(SCHED_FIFO, the lowest real-time level) where the OS allows: a normal-priority timer
shares its core with whatever else is runnable and is preempted mid-call every few
milliseconds, so beside two busy processes even the fastest of 5 calls was often a
preempted one (A/A floors 10-100%); a real-time thread preempts every normal task on its
core, so each call runs whole (floors 1-3% at a load average of 20). And a slow model gets
fewer calls per block (down to 1), so that more paired blocks fit in the budget: the
language model (~30 ms a call) got 7-10 blocks of 5 calls in 5 s, too few for a narrow
interval.

``rounds`` (the old method, kept to compare against): alternating rounds of ``repeats``
calls, one (p50, p95) per round.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from accelab.measure.runners import Runner, sync
from accelab.stats import Estimate, median_interval, paired_ratio, relative_half_width

MIN_BLOCKS_FOR_95 = 6  # fewer blocks than this cannot give a 95% order-statistic interval
# Seconds now. Every timing function takes one (``clock``): the real one by default; a test
# passes a virtual clock that its runners advance by known costs, so the timing logic (what
# is timed, in which order, when it stops) is checked exactly on a loaded machine.
Clock = Callable[[], float]


@dataclass(frozen=True)
class Latency:
    """One runner's latency: p50 = median of the per-block values (blocks: each block's
    fastest call; rounds: each round's p50), kept in ``rounds_p50_ms`` (paired by index with
    the other runners timed alongside); p95 over every timed call (rounds: median of the
    rounds' p95s)."""

    p50_ms: float
    p95_ms: float
    rounds_p50_ms: tuple[float, ...]
    batch_size: int
    method: str = "rounds"  # blocks | rounds; "+pinned cpu N" when pinned to one core

    @property
    def throughput_sps(self) -> float:
        return self.batch_size / (self.p50_ms / 1000.0)


def _quantiles(times: Sequence[float]) -> tuple[float, float]:
    p50, p95 = torch.tensor(times, dtype=torch.float64).quantile(
        torch.tensor([0.5, 0.95], dtype=torch.float64)
    )
    return float(p50), float(p95)


def _timed_calls(
    runner: Runner, batch: Tensor, calls: int, clock: Clock = time.perf_counter
) -> list[float]:
    """Milliseconds of each of ``calls`` forward passes (the runner must be active)."""
    times: list[float] = []
    for _ in range(calls):
        start = clock()
        runner(batch)
        sync(runner.device)
        times.append((clock() - start) * 1000.0)
    return times


def _warm(runner: Runner, batch: Tensor, warmup: int, clock: Clock = time.perf_counter) -> float:
    """Run ``warmup`` untimed calls; the fastest of them in ms (inf without warm-up)."""
    fastest = float("inf")
    with runner.active():
        for _ in range(warmup):
            fastest = min(fastest, _timed_calls(runner, batch, 1, clock)[0])
    return fastest


def calls_per_block(fastest_ms: Sequence[float], block_calls: int, block_ms: float) -> int:
    """Calls of each runner per block: ``block_calls``, fewer (at least 1) when that many
    rounds of every runner's call (at its fastest warm-up time) would take longer than
    ``block_ms``; 0 or an unknown call time (no warm-up) keeps ``block_calls``. A slow model
    then gets more, shorter blocks: more paired ratios within the time budget."""
    round_ms = sum(fastest_ms)
    if block_ms <= 0 or not math.isfinite(round_ms) or round_ms <= 0:
        return block_calls
    return max(1, min(block_calls, int(block_ms // round_ms)))


def time_round(
    runner: Runner, batch: Tensor, warmup: int, repeats: int, clock: Clock = time.perf_counter
) -> tuple[float, float]:
    """(p50, p95) milliseconds of one forward pass on ``batch`` after ``warmup`` passes."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    _warm(runner, batch, warmup, clock)
    with runner.active():
        return _quantiles(_timed_calls(runner, batch, repeats, clock))


def time_alternating(
    runners: Sequence[Runner], batch: Tensor, rounds: int = 5, warmup: int = 10, repeats: int = 50,
    clock: Clock = time.perf_counter,
) -> list[Latency]:  # fmt: skip
    """Each runner timed once per round, the order reversed every other round (A B, B A,
    ...) so that drift within a round does not favour whoever runs first."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    per: list[list[tuple[float, float]]] = [[] for _ in runners]
    for r in range(rounds):
        order = range(len(runners)) if r % 2 == 0 else reversed(range(len(runners)))
        for i in order:
            per[i].append(time_round(runners[i], batch, warmup, repeats, clock))
    return [
        Latency(
            p50_ms=statistics.median(p for p, _ in rows),
            p95_ms=statistics.median(q for _, q in rows),
            rounds_p50_ms=tuple(p for p, _ in rows),
            batch_size=len(batch),
        )
        for rows in per
    ]


def widest_half_width(blocks: Sequence[Sequence[float]]) -> float:
    """The stopping statistic: the largest relative half-width among the 95% intervals of
    every pair's median block ratio (one runner: of its own median block time)."""
    if len(blocks) == 1:
        return relative_half_width(median_interval(blocks[0]))
    return max(
        relative_half_width(paired_ratio(blocks[i], blocks[j]))
        for i in range(len(blocks))
        for j in range(i + 1, len(blocks))
    )


def precise_enough(blocks: Sequence[Sequence[float]], target: float, min_blocks: int) -> bool:
    """Stop sampling: enough blocks for a 95% interval, and every interval this narrow."""
    n = len(blocks[0]) if blocks else 0
    if n < max(min_blocks, MIN_BLOCKS_FOR_95):
        return False
    return widest_half_width(blocks) <= target


@contextlib.contextmanager
def pinned_to_one_cpu(pin: bool) -> Iterator[int | None]:
    """Pin this process to one of its allowed CPUs while timing (where the OS allows),
    yielding that CPU, or None when not pinned; the previous affinity is restored."""
    if not pin or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, allowed)


def realtime_allowed(runners: Sequence[Runner]) -> bool:
    """Real-time priority only for single-threaded CPU runners: a runtime's helper threads
    (intra-op pools, CUDA) would stay at normal priority, and a real-time caller spinning
    while it waits for them could starve them on its core."""
    return all(r.threads == 1 and not r.device.startswith("cuda") for r in runners)


@contextlib.contextmanager
def realtime_priority(enabled: bool) -> Iterator[str | None]:
    """Run the calling thread at real-time priority (SCHED_FIFO, level 1: above every
    normal task on its core, below every other real-time task) while timing, where the OS
    allows (Linux: root, CAP_SYS_NICE or an RLIMIT_RTPRIO); the previous policy is restored.
    Yields what was done ("real-time priority (SCHED_FIFO 1)"), or why not, or None when not
    asked. The kernel's real-time throttling (``sched_rt_runtime_us``, 95% of each second by
    default) still leaves the rest of the machine some time on this core; the others are
    untouched."""
    if not enabled:
        yield None
        return
    if not hasattr(os, "sched_setscheduler"):
        yield "normal priority (no real-time scheduling on this OS)"
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError as e:  # PermissionError without the privilege
        yield f"normal priority (real-time refused: {e.strerror or e})"
        return
    try:
        yield "real-time priority (SCHED_FIFO 1)"
    finally:
        os.sched_setscheduler(0, policy, param)


def time_blocks(
    runners: Sequence[Runner], batch: Tensor, *, warmup: int = 10, block_calls: int = 5,
    min_blocks: int = 20, target_precision: float = 0.01, max_seconds: float = 5.0,
    pin_cpu: bool = False, clock: Clock = time.perf_counter, block_ms: float = 0.0,
    realtime: bool = False, primed: bool = False,
) -> list[Latency]:  # fmt: skip
    """Interleave ``runners`` call by call in blocks of ``block_calls`` calls each (fewer
    for slow models: ``calls_per_block``; order rotated per block) after ``warmup`` calls
    each, until ``precise_enough`` or ``max_seconds``; pinned to one CPU and at real-time
    priority when asked (``realtime_priority``, single-threaded CPU runners only).
    ``primed``: each timed call right after an untimed call of the same runner, so that no
    runner is timed right after another one: with three runners (dense torch, dense ONNX
    Runtime, a variant) the rotated order A B C never changes who follows whom, and at
    batch 1 an ORT session timed right after torch ran ~14% slower than one timed right
    after another session (cold caches and predictors), an A/A bias rotation cannot remove.
    The ``method`` of each Latency says what was applied."""
    if block_calls < 1:
        raise ValueError(f"block_calls must be >= 1, got {block_calls}")
    k = len(runners)
    blocks: list[list[float]] = [[] for _ in runners]
    calls: list[list[float]] = [[] for _ in runners]
    with (
        pinned_to_one_cpu(pin_cpu) as cpu,
        realtime_priority(realtime and realtime_allowed(runners)) as priority,
    ):
        fastest = [_warm(r, batch, warmup, clock) for r in runners]
        per_block = calls_per_block(fastest, block_calls, block_ms)
        start, next_check = clock(), max(min_blocks, MIN_BLOCKS_FOR_95)
        while True:
            b = len(blocks[0])
            order = [(b + j) % k for j in range(k)]  # rotated: each runner leads in turn
            times: list[list[float]] = [[] for _ in runners]
            for _ in range(per_block):  # A B A B ...: the runners' calls are neighbours
                for i in order:
                    with runners[i].active():
                        if primed:
                            runners[i](batch)  # untimed: the timed call follows its own kind
                        times[i].extend(_timed_calls(runners[i], batch, 1, clock))
            for i in range(k):
                calls[i].extend(times[i])
                blocks[i].append(min(times[i]))  # other work only ever adds time
            n = b + 1
            if clock() - start >= max_seconds:
                break
            if n >= next_check:  # re-sorting every block would cost more than the blocks
                if precise_enough(blocks, target_precision, min_blocks):
                    break
                next_check = n + max(1, n // 10)
    method = "blocks" if cpu is None else f"blocks, pinned to cpu {cpu}"
    if block_ms > 0:
        method += f", {per_block} call{'s' if per_block > 1 else ''} per block"
    if primed:
        method += ", primed"
    if priority is not None:
        method += f", {priority}"
    return [
        Latency(
            p50_ms=statistics.median(rows),
            p95_ms=_quantiles(every)[1],
            rounds_p50_ms=tuple(rows),
            batch_size=len(batch),
            method=method,
        )
        for rows, every in zip(blocks, calls, strict=True)
    ]


def time_runners(
    runners: Sequence[Runner], batch: Tensor, s, clock: Clock = time.perf_counter
) -> list[Latency]:
    """Time ``runners`` side by side as the measure config ``s`` says (method and knobs)."""
    if s.method == "rounds":
        return time_alternating(runners, batch, s.rounds, s.warmup, s.repeats, clock)
    return time_blocks(
        runners, batch, warmup=s.warmup, block_calls=s.block_calls, min_blocks=s.min_blocks,
        target_precision=s.target_precision, max_seconds=s.max_seconds, pin_cpu=s.pin_cpu,
        clock=clock, block_ms=s.block_ms, realtime=s.realtime, primed=s.primed,
    )  # fmt: skip


def timing(s) -> str:
    """How the measure config ``s`` times (for benchmark and CLI headers)."""
    if s.method == "rounds":
        return f"{s.rounds} alternating rounds x {s.repeats} runs"
    size = f"{s.block_calls} runs"
    if s.block_ms > 0:  # a slow model gets fewer calls per block (its latency's method says)
        size = f"up to {s.block_calls} runs ({s.block_ms:g} ms)"
    parts = [f"interleaved blocks of {size}"]
    parts += [text for on, text in ((s.primed, "primed"), (s.pin_cpu, "pinned to one cpu"),
              (s.realtime, "real-time priority where allowed")) if on]  # fmt: skip
    parts.append(f"until +-{s.target_precision * 100:g}% or {s.max_seconds:g} s")
    return ", ".join(parts)


def speedup(baseline: Latency, variant: Latency) -> Estimate:
    """Baseline time / variant time per block (or round), paired: the median ratio with
    its order-statistic 95% interval (min-max below 6 pairs)."""
    return paired_ratio(baseline.rounds_p50_ms, variant.rounds_p50_ms)
