"""Measurement: quality with intervals, latency interleaved in blocks (or rounds), MACs, params, sizes.

Models whose cost the tests control (``tests.tasks``) make a swapped or mis-threaded
timing visible: these tests fail when such a bug is planted in ``accelab.measure``.
"""

from __future__ import annotations

import copy
import statistics

import pytest
import torch

from accelab.compress import convert_int8_dynamic, fake_quant_report, prepare_fake_quant
from accelab.config.schema import MeasureConfig
from accelab.measure import (
    SIMULATED,
    TORCH_INT8,
    TorchRunner,
    count_macs,
    count_params,
    measure_pair,
    per_example,
    serialized_size_bytes,
    time_round,
)
from accelab.stats import paired_ratio
from tests import tasks
from tests.helpers_torch import accuracy, trained_mlp
from trainables.digits import TASK

MLP_MACS = 64 * 256 + 256 * 256 + 256 * 10
MLP_PARAMS = MLP_MACS + 256 + 256 + 10
FAST = MeasureConfig(warmup=2, min_blocks=6, max_seconds=0.5)


@pytest.fixture(scope="module")
def trained():
    return trained_mlp((256, 256))


def test_dense_against_itself_reads_about_one(trained):
    model, splits = trained
    base, same, cmp = measure_pair(
        TorchRunner(model), TorchRunner(copy.deepcopy(model)), splits.test, TASK, FAST
    )
    assert base.quality.value == accuracy(model, splits.test) > 0.9
    assert base.quality.n == len(splits.test) == 270
    assert base.quality.lo < base.quality.value < base.quality.hi
    assert 0 < base.latency_p50_ms <= base.latency_p95_ms
    assert len(base.latency.rounds_p50_ms) >= 6 and base.latency.method.startswith("blocks")
    assert base.throughput_sps == pytest.approx(64 / (base.latency_p50_ms / 1000))
    assert (base.params, base.nonzero_params, base.macs) == (MLP_PARAMS, MLP_PARAMS, MLP_MACS)
    assert 4 * MLP_PARAMS < base.size_bytes < 4 * MLP_PARAMS + 10_000
    assert base.packed_size_bytes is None
    assert (base.threads, base.batch_size, base.device, base.simulated) == (1, 64, "cpu", False)
    # the same weights: no drop at all, an interval around zero, a speedup near 1
    assert cmp.drop.value == 0.0 and cmp.drop.lo <= 0.0 <= cmp.drop.hi
    assert cmp.speedup.lo <= cmp.speedup.value <= cmp.speedup.hi
    assert 0.5 < cmp.speedup.value < 2.0


@pytest.mark.parametrize("method", ["blocks", "rounds"])
def test_each_model_is_timed_in_its_own_slot_every_round(method):
    """8 matmuls against 1: every block's (round's) ratio must show it, not just the first."""
    splits = TASK.load_splits(0)
    torch.manual_seed(0)
    slow, fast = tasks.Matmuls(k=8), tasks.Matmuls(k=1)
    settings = MeasureConfig(
        method=method, rounds=4, warmup=3, repeats=15, min_blocks=8, max_seconds=0.5
    )
    base, m, cmp = measure_pair(
        TorchRunner(slow), TorchRunner(fast), splits.test, tasks.COST, settings
    )
    ratios = [
        b / v for b, v in zip(base.latency.rounds_p50_ms, m.latency.rounds_p50_ms, strict=True)
    ]
    assert len(ratios) == 4 if method == "rounds" else len(ratios) >= 8
    # each block paired its own baseline and variant timings (a busy machine may spoil one)
    assert sum(r > 2.0 for r in ratios) >= 0.8 * len(ratios), ratios
    assert cmp.speedup == paired_ratio(base.latency.rounds_p50_ms, m.latency.rounds_p50_ms)
    assert cmp.speedup.value > 3.0 and cmp.speedup.lo >= min(ratios)
    assert base.latency_p50_ms > 2 * m.latency_p50_ms


@pytest.mark.parametrize("threads", [1, 2])
def test_configured_threads_are_what_the_kernels_run_on(threads):
    splits = TASK.load_splits(0)
    model = tasks.build_probe()
    tasks.THREADS_SEEN.clear()
    before = torch.get_num_threads()
    settings = MeasureConfig(rounds=2, warmup=1, repeats=3, threads=threads)
    runner = TorchRunner(model, threads=settings.threads)
    measure_pair(runner, TorchRunner(copy.deepcopy(model), threads=threads), splits.test,
                 tasks.PROBE, settings)  # fmt: skip
    assert set(tasks.THREADS_SEEN) == {threads}
    assert torch.get_num_threads() == before  # restored afterwards


def test_simulated_variant_has_quality_and_computed_size_but_no_speed(trained):
    model, splits = trained
    fake = prepare_fake_quant(copy.deepcopy(model), 4)
    runner = TorchRunner(fake, SIMULATED, simulated=True)
    base, m, cmp = measure_pair(TorchRunner(model), runner, splits.test, TASK, FAST)
    assert m.latency is None and m.latency_p50_ms is None and m.throughput_sps is None
    assert cmp.speedup is None
    assert m.packed_size_bytes == fake_quant_report(fake)["packed_size_bytes"]
    assert m.size_bytes == serialized_size_bytes(fake) > 4 * MLP_PARAMS  # its file is fp32
    assert m.packed_size_bytes < m.size_bytes / 6
    assert m.quality.value > 0.9 and m.macs == MLP_MACS
    assert base.latency is not None


def test_int8_runner_names_its_backend_and_shrinks(trained):
    model, splits = trained
    base, m, cmp = measure_pair(
        TorchRunner(model), TorchRunner(convert_int8_dynamic(model), TORCH_INT8), splits.test,
        TASK, FAST,
    )  # fmt: skip
    assert m.backend == TORCH_INT8 and not m.simulated
    assert 0.2 < cmp.size_ratio < 0.35  # int8 weights + per-channel scales
    assert cmp.speedup.value == pytest.approx(
        statistics.median(
            b / v for b, v in zip(base.latency.rounds_p50_ms, m.latency.rounds_p50_ms, strict=True)
        )
    )  # the median of the per-block ratios
    assert cmp.drop.value == pytest.approx(base.quality.value - m.quality.value)


def test_per_example_values_are_correctness_in_order(trained):
    model, splits = trained
    values = per_example(TorchRunner(model), splits.test, TASK)
    with torch.inference_mode():
        expected = (model(splits.test.tensors[0]).argmax(1) == splits.test.tensors[1]).double()
    assert torch.equal(values, expected)


def test_macs_and_params_for_cnn_and_int8(trained):
    cnn = TASK.build_model("cnn")
    x = TASK.example_input(1)
    assert count_macs(cnn, x) == 32 * 8 * 8 * 9 + 512 * 512 + 512 * 10
    assert count_macs(cnn, TASK.example_input(3)) == 3 * count_macs(cnn, x)
    model, _ = trained
    int8 = convert_int8_dynamic(model)
    assert count_macs(int8, x) == count_macs(model, x) == MLP_MACS
    assert count_params(int8)[0] == count_params(model)[0] == MLP_PARAMS


def test_time_round_restores_threads_and_mode(trained):
    model, splits = trained
    model.train()
    before = torch.get_num_threads()
    runner = TorchRunner(model, threads=1)
    p50, p95 = time_round(runner, splits.test.tensors[0][:8], warmup=2, repeats=5)
    assert 0 < p50 <= p95
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        time_round(runner, splits.test.tensors[0][:8], warmup=0, repeats=0)
