"""A GPU call returns when its kernels are queued, not when they ran: the timer's clock
stops only after the device is synchronised, so what is timed is the work, not the
launch. Virtual clock: the call itself takes 0.1 ms (the launch), ``sync`` 5 ms (the
kernels finishing)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from fractions import Fraction

import pytest
import torch

from accelab.measure import latency
from accelab.measure.latency import _timed_calls, time_blocks
from tests.unit.measure.test_latency_clock import Clock

BATCH = torch.zeros(2, 1)
LAUNCH_MS, KERNELS_MS = Fraction(1, 10), Fraction(5)


@dataclass
class Launcher:
    """A runner on a (virtual) GPU: each call queues work that ``sync`` waits for."""

    clock: Clock
    device: str = "cuda:0"
    threads: int = 1
    simulated: bool = False
    pending: Fraction = Fraction(0)

    @contextlib.contextmanager
    def active(self):
        yield

    def __call__(self, x):
        self.clock.now += LAUNCH_MS / 1000
        self.pending += KERNELS_MS / 1000
        return x


@pytest.fixture
def gpu(monkeypatch):
    clock = Clock()
    runners = [Launcher(clock), Launcher(clock)]

    def sync(device: str) -> None:  # waits for this device's queued kernels
        for r in runners:
            if r.device == device:
                clock.now += r.pending
                r.pending = Fraction(0)

    monkeypatch.setattr(latency, "sync", sync)
    return clock, runners


def test_each_timed_call_waits_for_its_kernels(gpu):
    clock, (runner, _) = gpu
    assert _timed_calls(runner, BATCH, 3, clock) == pytest.approx([5.1] * 3)


def test_every_block_value_includes_the_kernels(gpu):
    clock, runners = gpu
    lat = time_blocks(runners, BATCH, warmup=1, block_calls=2, min_blocks=6,
                      target_precision=1.0, max_seconds=1e9, clock=clock)  # fmt: skip
    for one in lat:
        assert one.rounds_p50_ms and all(v == pytest.approx(5.1) for v in one.rounds_p50_ms)
        assert one.p50_ms == pytest.approx(5.1) and one.p95_ms == pytest.approx(5.1)
