"""Measurement: accuracy, latency percentiles, MACs, params, sizes and honest comparisons."""

from __future__ import annotations

import copy

import pytest
import torch

from accelab.compress import convert_int8_dynamic, fake_quant_report, prepare_fake_quant
from accelab.measure import (
    Measurement,
    compare,
    count_macs,
    count_params,
    evaluate_accuracy,
    measure,
    measure_latency,
    saved_size_bytes,
)
from tests.helpers_torch import trained_mlp
from trainables.digits import TASK

MLP_MACS = 64 * 256 + 256 * 256 + 256 * 10
MLP_PARAMS = MLP_MACS + 256 + 256 + 10


@pytest.fixture(scope="module")
def trained():
    return trained_mlp((256, 256))


def test_dense_measurement(trained):
    model, splits = trained
    threads = torch.get_num_threads()
    m = measure(model, splits.test, backend="fp32-dense", simulated=False, threads=1, repeats=20)
    assert torch.get_num_threads() == threads
    assert m.accuracy == evaluate_accuracy(model, splits.test) > 0.9
    assert 0 < m.latency_p50_ms <= m.latency_p95_ms
    assert m.throughput_sps == pytest.approx(64 / (m.latency_p50_ms / 1000))
    assert (m.params, m.nonzero_params, m.macs) == (MLP_PARAMS, MLP_PARAMS, MLP_MACS)
    assert 4 * MLP_PARAMS < m.size_bytes < 4 * MLP_PARAMS + 10_000
    assert (m.threads, m.batch_size, m.device, m.simulated) == (1, 64, "cpu", False)
    metrics = m.to_metrics()
    assert metrics["backend"] == "fp32-dense" and metrics["simulated"] == 0.0
    assert isinstance(metrics["latency_p50_ms"], float)


def test_simulated_measurement_has_no_speed(trained):
    model, splits = trained
    fake = prepare_fake_quant(copy.deepcopy(model), 4)
    with pytest.raises(ValueError, match="simulated=True"):
        measure(fake, splits.test, backend="fake-quant (simulated)", simulated=False)
    m = measure(fake, splits.test, backend="fake-quant (simulated)", simulated=True)
    assert m.latency_p50_ms is m.latency_p95_ms is m.throughput_sps is None
    assert m.size_bytes == fake_quant_report(fake)["packed_size_bytes"] == saved_size_bytes(fake)
    assert m.accuracy > 0.9 and m.macs == MLP_MACS
    assert m.to_metrics()["latency_p50_ms"] == "n/a"


def test_compare(trained):
    model, splits = trained
    base = measure(model, splits.test, backend="fp32-dense", simulated=False, repeats=10)
    int8 = measure(
        convert_int8_dynamic(model), splits.test, backend="int8-x86", simulated=False, repeats=10
    )
    result = compare(base, int8)
    assert result["speedup"] == pytest.approx(base.latency_p50_ms / int8.latency_p50_ms)
    assert 0.2 < result["size_ratio"] < 0.35  # int8 weights + per-channel scales
    assert result["accuracy_drop"] == pytest.approx(base.accuracy - int8.accuracy)
    simulated = Measurement(**{**base.__dict__, "latency_p50_ms": None, "simulated": True})
    assert compare(base, simulated)["speedup"] is None


def test_macs_and_params_for_cnn_and_int8(trained):
    cnn = TASK.build_model("cnn")
    x = TASK.example_input(1)
    assert count_macs(cnn, x) == 32 * 8 * 8 * 9 + 512 * 512 + 512 * 10
    assert count_macs(cnn, TASK.example_input(3)) == 3 * count_macs(cnn, x)
    model, _ = trained
    int8 = convert_int8_dynamic(model)
    assert count_macs(int8, x) == count_macs(model, x) == MLP_MACS
    assert count_params(int8)[0] == count_params(model)[0] == MLP_PARAMS


def test_measure_latency_restores_threads_and_mode(trained):
    model, splits = trained
    model.train()
    before = torch.get_num_threads()
    p50, p95 = measure_latency(model, splits.test.tensors[0][:8], warmup=2, repeats=5, threads=1)
    assert 0 < p50 <= p95
    assert torch.get_num_threads() == before and model.training
    with pytest.raises(ValueError):
        measure_latency(model, splits.test.tensors[0][:8], repeats=0)
