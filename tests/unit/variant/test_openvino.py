"""OpenVINO as a deployment target (``runtime: openvino``): a small trained MLP built at
32 (f32 hint), 16 (default hint) and 8 bits (NNCF int8), its outputs against torch, the
threads/streams/hint the compiled model reports, the backend named after what runs, and a
measurement next to the dense model on OpenVINO f32 and on torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from accelab.backends import DESCRIPTIONS, OV_F32
from accelab.config.schema import ExperimentConfig
from accelab.errors import ConfigError
from accelab.measure import TorchRunner, per_example
from accelab.variant.targets import (
    DenseRunners,
    Exports,
    build_on,
    measure_target,
    strip_for_export,
    targets_of,
)
from tests.helpers_torch import accuracy, trained_mlp
from trainables.digits import TASK

pytest.importorskip("openvino")
pytest.importorskip("nncf")

CPUINFO = Path("/proc/cpuinfo")
BF16_CPU = CPUINFO.exists() and "avx512_bf16" in CPUINFO.read_text()
FAST = {"warmup": 2, "min_blocks": 6, "max_seconds": 0.5}


def config(bits: int, threads: int = 1) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": [128]}},
        "compression": {"quant": {"bits": bits}},
        "measure": {**FAST, "threads": threads, "batch_size": 32, "targets": [{"runtime": "openvino"}]},
    })  # fmt: skip


@pytest.fixture(scope="module")
def trained():
    return trained_mlp((128,))


def build(model, cfg, splits):
    return build_on("openvino", model, cfg, TASK, Exports(strip_for_export(model)),
                    splits.test.tensors[0])  # fmt: skip


@pytest.mark.parametrize(("bits", "atol"), [(32, 1e-4), (16, 0.1), (8, 0.5)])
def test_outputs_match_torch_and_the_backend_names_what_runs(trained, bits, atol):
    model, splits = trained
    built = build(model, config(bits), splits)
    runner = built.runner
    x = splits.test.tensors[0]
    with torch.inference_mode():
        expected = model(x)
    got = runner(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < atol
    precision = runner.inference_precision
    if bits == 32:
        assert precision == "f32"
    elif BF16_CPU:  # the default hint runs bf16 where the CPU has bf16 units
        assert precision == "bf16"
    name = {32: f"openvino-{precision}", 16: f"openvino-{precision}",
            8: "openvino-int8-nncf" + ("" if precision == "f32" else f"+{precision}")}[bits]  # fmt: skip
    assert built.backend == runner.backend == name and name in DESCRIPTIONS
    # the same argmax almost everywhere: accuracy within 2 points of torch
    agree = (got.argmax(1) == expected.argmax(1)).double().mean().item()
    assert agree > 0.98
    if bits == 8:  # really quantized: smaller than the f32 IR
        assert runner.size_bytes() < 0.6 * build(model, config(32), splits).runner.size_bytes()


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_streams_and_hint_are_set(trained, threads):
    model, splits = trained
    runner = build(model, config(32, threads), splits).runner
    assert runner.setting("INFERENCE_NUM_THREADS") == str(threads)
    assert runner.setting("NUM_STREAMS") == "1"
    assert runner.setting("PERFORMANCE_HINT") == "LATENCY"
    assert f"INFERENCE_NUM_THREADS={threads}" in runner.device and runner.threads == threads


def test_measured_next_to_dense_openvino_f32_and_torch(trained):
    model, splits = trained
    cfg = config(8)
    (target,) = targets_of(cfg)
    assert target.key == "ov_b32"
    runner = TorchRunner(model)
    dense = DenseRunners(runner, TASK, per_example(runner, splits.test, TASK),
                         per_example(runner, splits.val, TASK))  # fmt: skip
    built = build(model, cfg, splits)
    r = measure_target(target, built, dense, splits.test, splits.val, cfg.measure, cfg)
    assert r.error is None
    assert r.family_baseline.backend == OV_F32 and r.torch_baseline.backend == "torch-fp32"
    assert r.vs_family.speedup.n >= 6 and r.vs_torch.speedup.value > 0
    assert abs(r.measurement.quality.value - accuracy(model, splits.test)) < 0.03


def test_preflight_refuses_openvino_when_it_is_not_installed(monkeypatch):
    from accelab import preflight
    from accelab.export import openvino

    cfg = config(32)
    assert not any("openvino" in p for p in preflight.measure_errors(cfg))
    monkeypatch.setattr(openvino, "available", lambda: False)
    assert openvino.MISSING in preflight.measure_errors(cfg)
    assert ConfigError  # the CLI turns preflight problems into one ConfigError (exit 2)
