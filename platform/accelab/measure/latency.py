"""Latency with real kernels after warm-up: per round, the median (p50) and p95 of
``repeats`` timed forward passes; runners compared in alternating rounds so that a noisy
neighbour slows every runner alike instead of one of them."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from accelab.measure.runners import Runner, sync
from accelab.stats import Estimate, ratio_spread


@dataclass(frozen=True)
class Latency:
    """One runner's latency over rounds: medians of the per-round p50/p95."""

    p50_ms: float
    p95_ms: float
    rounds_p50_ms: tuple[float, ...]
    batch_size: int

    @property
    def throughput_sps(self) -> float:
        return self.batch_size / (self.p50_ms / 1000.0)


def time_round(runner: Runner, batch: Tensor, warmup: int, repeats: int) -> tuple[float, float]:
    """(p50, p95) milliseconds of one forward pass on ``batch`` after ``warmup`` passes."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times: list[float] = []
    with runner.active():
        for _ in range(warmup):
            runner(batch)
        sync(runner.device)
        for _ in range(repeats):
            start = time.perf_counter()
            runner(batch)
            sync(runner.device)
            times.append((time.perf_counter() - start) * 1000.0)
    p50, p95 = torch.tensor(times, dtype=torch.float64).quantile(
        torch.tensor([0.5, 0.95], dtype=torch.float64)
    )
    return float(p50), float(p95)


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


def speedup(baseline: Latency, variant: Latency) -> Estimate:
    """Baseline time / variant time, per round (paired): median and [min, max]."""
    return ratio_spread(baseline.rounds_p50_ms, variant.rounds_p50_ms)
