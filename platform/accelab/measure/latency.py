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

``rounds`` (the old method, kept to compare against): alternating rounds of ``repeats``
calls, one (p50, p95) per round.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from accelab.measure.runners import Runner, sync
from accelab.stats import Estimate, median_interval, paired_ratio, relative_half_width

MIN_BLOCKS_FOR_95 = 6  # fewer blocks than this cannot give a 95% order-statistic interval


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


def _timed_calls(runner: Runner, batch: Tensor, calls: int) -> list[float]:
    """Milliseconds of each of ``calls`` forward passes (the runner must be active)."""
    times: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        runner(batch)
        sync(runner.device)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _warm(runner: Runner, batch: Tensor, warmup: int) -> None:
    with runner.active():
        for _ in range(warmup):
            runner(batch)
        sync(runner.device)


def time_round(runner: Runner, batch: Tensor, warmup: int, repeats: int) -> tuple[float, float]:
    """(p50, p95) milliseconds of one forward pass on ``batch`` after ``warmup`` passes."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    _warm(runner, batch, warmup)
    with runner.active():
        return _quantiles(_timed_calls(runner, batch, repeats))


def time_alternating(
    runners: Sequence[Runner], batch: Tensor, rounds: int = 5, warmup: int = 10, repeats: int = 50
) -> list[Latency]:
    """Each runner timed once per round, the order reversed every other round (A B, B A,
    ...) so that drift within a round does not favour whoever runs first."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    per: list[list[tuple[float, float]]] = [[] for _ in runners]
    for r in range(rounds):
        order = range(len(runners)) if r % 2 == 0 else reversed(range(len(runners)))
        for i in order:
            per[i].append(time_round(runners[i], batch, warmup, repeats))
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


def time_blocks(
    runners: Sequence[Runner], batch: Tensor, *, warmup: int = 10, block_calls: int = 5,
    min_blocks: int = 20, target_precision: float = 0.01, max_seconds: float = 5.0,
    pin_cpu: bool = False,
) -> list[Latency]:  # fmt: skip
    """Interleave ``runners`` call by call in blocks of ``block_calls`` calls each (order
    rotated per block) after ``warmup`` calls each, until ``precise_enough`` or
    ``max_seconds``."""
    if block_calls < 1:
        raise ValueError(f"block_calls must be >= 1, got {block_calls}")
    k = len(runners)
    blocks: list[list[float]] = [[] for _ in runners]
    calls: list[list[float]] = [[] for _ in runners]
    with pinned_to_one_cpu(pin_cpu) as cpu:
        for r in runners:
            _warm(r, batch, warmup)
        start, next_check = time.perf_counter(), max(min_blocks, MIN_BLOCKS_FOR_95)
        while True:
            b = len(blocks[0])
            order = [(b + j) % k for j in range(k)]  # rotated: each runner leads in turn
            times: list[list[float]] = [[] for _ in runners]
            for _ in range(block_calls):  # A B A B ...: the runners' calls are neighbours
                for i in order:
                    with runners[i].active():
                        times[i].extend(_timed_calls(runners[i], batch, 1))
            for i in range(k):
                calls[i].extend(times[i])
                blocks[i].append(min(times[i]))  # other work only ever adds time
            n = b + 1
            if time.perf_counter() - start >= max_seconds:
                break
            if n >= next_check:  # re-sorting every block would cost more than the blocks
                if precise_enough(blocks, target_precision, min_blocks):
                    break
                next_check = n + max(1, n // 10)
    method = "blocks" if cpu is None else f"blocks, pinned to cpu {cpu}"
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


def time_runners(runners: Sequence[Runner], batch: Tensor, s) -> list[Latency]:
    """Time ``runners`` side by side as the measure config ``s`` says (method and knobs)."""
    if s.method == "rounds":
        return time_alternating(runners, batch, s.rounds, s.warmup, s.repeats)
    return time_blocks(
        runners, batch, warmup=s.warmup, block_calls=s.block_calls, min_blocks=s.min_blocks,
        target_precision=s.target_precision, max_seconds=s.max_seconds, pin_cpu=s.pin_cpu,
    )  # fmt: skip


def timing(s) -> str:
    """How the measure config ``s`` times (for benchmark and CLI headers)."""
    if s.method == "rounds":
        return f"{s.rounds} alternating rounds x {s.repeats} runs"
    return (f"interleaved blocks of {s.block_calls} runs, until +-{s.target_precision:.0%} "
            f"or {s.max_seconds:g} s")  # fmt: skip


def speedup(baseline: Latency, variant: Latency) -> Estimate:
    """Baseline time / variant time per block (or round), paired: the median ratio with
    its order-statistic 95% interval (min-max below 6 pairs)."""
    return paired_ratio(baseline.rounds_p50_ms, variant.rounds_p50_ms)
