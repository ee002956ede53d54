"""Honest measurement of a (compressed) model next to its baseline.

Quality: the task's metric on the held-out split, per example, with a 95% interval and
the paired drop against the baseline. Latency: real kernels after warm-up, interleaved with
the baseline in short blocks in the same process, the speedup the median of the paired
block ratios with its 95% interval (``accelab.measure.latency``).
Simulated runners (fake quantization) get quality and a computed packed size, never a
latency or a speedup. Every measurement names its backend, device and threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from accelab.config.schema import MeasureConfig
from accelab.measure.latency import (
    Latency,
    speedup,
    time_alternating,
    time_blocks,
    time_round,
    time_runners,
)
from accelab.measure.model_stats import (
    count_macs,
    count_params,
    packed_size_bytes,
    serialized_size_bytes,
)
from accelab.measure.quality import drop, estimate, per_example
from accelab.measure.runners import (
    SIMULATED,
    TORCH_FP32,
    TORCH_INT8,
    GenerateRunner,
    Runner,
    TorchRunner,
)
from accelab.stats import Estimate
from trainables.base import Task
from trainables.splits import examples_of

__all__ = [
    "SIMULATED", "TORCH_FP32", "TORCH_INT8", "Comparison", "GenerateRunner", "Latency",
    "Measurement", "Runner",
    "TorchRunner", "compare", "count_macs", "count_params", "drop", "estimate", "evaluate",
    "first_batch",
    "measure_pair", "per_example", "serialized_size_bytes", "speedup", "time_alternating",
    "time_blocks", "time_round", "time_runners",
]  # fmt: skip


@dataclass(frozen=True)
class Measurement:
    """One runner's numbers. ``latency`` is None when simulated (no real kernel)."""

    quality: Estimate  # the task's metric on the test split, 95% interval, n examples
    latency: Latency | None
    params: int
    nonzero_params: int
    size_bytes: int  # real: the serialized model file
    packed_size_bytes: int | None  # computed, for fake-quant weights only
    macs: int
    backend: str
    simulated: bool
    device: str
    threads: int
    batch_size: int

    @property
    def latency_p50_ms(self) -> float | None:
        return self.latency.p50_ms if self.latency else None

    @property
    def latency_p95_ms(self) -> float | None:
        return self.latency.p95_ms if self.latency else None

    @property
    def throughput_sps(self) -> float | None:
        return self.latency.throughput_sps if self.latency else None


@dataclass(frozen=True)
class Comparison:
    """A variant against its baseline, both measured in this process."""

    speedup: Estimate | None  # per-round ratios; None when either side is simulated
    drop: Estimate  # paired, on the test split; > 0 means worse
    size_ratio: float
    params_ratio: float


def evaluate(model, dataset: Dataset, task: Task, threads: int | None = None) -> float:
    """The task's metric of a torch model on ``dataset`` (a plain number, for quick checks)."""
    runner = TorchRunner(model, threads=threads or torch.get_num_threads())
    return estimate(per_example(runner, dataset, task), task.metric).value


def first_batch(dataset: Dataset, batch_size: int) -> Tensor:
    """The split's first ``batch_size`` inputs (any kind of split: ``trainables.splits``)."""
    return examples_of(dataset, batch_size)[0]


def describe(
    runner: Runner, values: Tensor, task: Task, latency: Latency | None, batch_size: int
) -> Measurement:
    model = runner.model
    params, nonzero = count_params(model)
    size = runner.size_bytes() if hasattr(runner, "size_bytes") else serialized_size_bytes(model)
    with runner.active():  # every forward pass of a measurement runs on the runner's threads
        macs = count_macs(model, task.example_input(1))
    return Measurement(
        quality=estimate(values, task.metric),
        latency=latency,
        params=params,
        nonzero_params=nonzero,
        size_bytes=size,
        packed_size_bytes=packed_size_bytes(model),
        macs=macs,
        backend=runner.backend,
        simulated=runner.simulated,
        device=runner.device,
        threads=runner.threads,
        batch_size=batch_size,
    )


def compare(base: Measurement, m: Measurement, base_values: Tensor, values: Tensor, task: Task):
    timed = base.latency is not None and m.latency is not None
    return Comparison(
        speedup=speedup(base.latency, m.latency) if timed else None,
        drop=drop(base_values, values, task.metric),
        size_ratio=m.size_bytes / base.size_bytes,
        params_ratio=m.params / base.params if base.params else float("nan"),
    )


def measure_pair(
    baseline: Runner, variant: Runner, test_set: Dataset, task: Task, s: MeasureConfig
) -> tuple[Measurement, Measurement, Comparison]:
    """Baseline and variant side by side: quality on every test example, latency
    interleaved in blocks (the variant only if it runs on a real kernel)."""
    batch = first_batch(test_set, s.batch_size)
    timed = [baseline] if variant.simulated else [baseline, variant]
    latencies = time_runners(timed, batch, s)
    base_values = per_example(baseline, test_set, task)
    var_values = per_example(variant, test_set, task)
    base = describe(baseline, base_values, task, latencies[0], len(batch))
    var_latency = None if variant.simulated else latencies[1]
    m = describe(variant, var_values, task, var_latency, len(batch))
    return base, m, compare(base, m, base_values, var_values, task)
