"""Edges of ``accelab.measure`` (measure_pair, compare, describe, evaluate) that its mutation
group found untested (issue #18): the ratios against the baseline (a baseline without
parameters), a runtime's own file size, the thread count ``evaluate`` is given, the variant's
batch size, and a simulated variant never timed. Untrained tiny models, milliseconds."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from accelab.config.schema import MeasureConfig
from accelab.export.onnx import to_onnx
from accelab.export.runner import OrtRunner
from accelab.measure import (
    SIMULATED,
    Measurement,
    TorchRunner,
    compare,
    describe,
    evaluate,
    measure_pair,
    per_example,
    serialized_size_bytes,
)
from accelab.stats import Estimate
from tests import tasks
from trainables.digits import TASK

FAST = MeasureConfig(warmup=2, min_blocks=6, max_seconds=0.5, realtime=False)


def measurement(params: int, size_bytes: int) -> Measurement:
    return Measurement(
        quality=Estimate(0.5, 0.4, 0.6, 4), latency=None, params=params, nonzero_params=params,
        size_bytes=size_bytes, packed_size_bytes=None, macs=0, backend="torch-fp32",
        simulated=False, device="cpu", threads=1, batch_size=4,
    )  # fmt: skip


VALUES = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.double)


def test_compare_divides_the_variants_params_and_size_by_the_baselines():
    cmp = compare(measurement(200, 1000), measurement(50, 250), VALUES, VALUES, TASK)
    assert (cmp.params_ratio, cmp.size_ratio) == (0.25, 0.25)
    assert cmp.speedup is None and cmp.drop.value == 0.0


def test_a_baseline_without_parameters_gives_no_params_ratio():
    cmp = compare(measurement(0, 1000), measurement(0, 500), VALUES, VALUES, TASK)
    assert math.isnan(cmp.params_ratio) and cmp.size_ratio == 0.5


def test_a_runtime_with_its_own_file_reports_that_files_size():
    model = TASK.build_model("mlp")
    onnx = to_onnx(model, TASK.example_input(2), exporter="torchscript")
    runner = OrtRunner(onnx, model, "ort-fp32")
    splits = TASK.load_splits(0)
    m = describe(runner, per_example(runner, splits.test, TASK), TASK, None, 8)
    assert m.size_bytes == len(onnx) != serialized_size_bytes(model)


def test_evaluate_runs_on_the_threads_it_is_given():
    splits = TASK.load_splits(0)
    model = tasks.build_probe()
    before = torch.get_num_threads()
    for threads, expected in ((2, 2), (3, 3), (None, before)):
        tasks.THREADS_SEEN.clear()
        evaluate(model, splits.test, tasks.PROBE, threads=threads)
        assert set(tasks.THREADS_SEEN) == {expected}
    assert torch.get_num_threads() == before


@dataclass
class Counted(TorchRunner):
    """A torch runner that counts its calls."""

    calls: int = 0

    def __call__(self, x):
        self.calls += 1
        return super().__call__(x)


def test_a_simulated_variant_is_never_timed_and_both_name_the_timed_batch():
    splits = TASK.load_splits(0)
    torch.manual_seed(0)
    model = TASK.build_model("mlp")
    fake = Counted(copy.deepcopy(model), SIMULATED, simulated=True)
    base, m, cmp = measure_pair(TorchRunner(model), fake, splits.test, TASK, FAST)
    assert fake.calls == math.ceil(len(splits.test) / 256)  # per_example's batches only
    assert m.latency is None and cmp.speedup is None and base.latency is not None
    assert base.batch_size == m.batch_size == FAST.batch_size == 64
