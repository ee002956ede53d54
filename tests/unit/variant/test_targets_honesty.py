"""What a judged variant reports, target by target, without Ray: each drop from its own
split, each speedup against the dense model on the same runtime, every runtime on
``measure.threads``, sizes from the real files, calibration on training data."""

from __future__ import annotations

import copy
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper

from accelab.backends import ORT_FP32, TORCH_FP32
from accelab.compress.pipeline import Calibration, compress_for_training, finalize
from accelab.config.schema import ExperimentConfig, MeasureConfig
from accelab.measure import serialized_size_bytes
from accelab.measure.latency import speedup
from accelab.training.checkpoint import save_checkpoint
from accelab.variant.judge import MB, judge, load_dense
from accelab.variant.record import latency_method_tags
from accelab.variant.setup import Setup
from tests import tasks
from tests.helpers_torch import trained_mlp
from trainables.digits import load_splits

TARGETS = [{"runtime": "torch"}, {"runtime": "onnxruntime", "batch_size": 16}]
ORT = "ort_b16"


def config(task: str, threads: int = 2, **sections) -> ExperimentConfig:
    measure = {"rounds": 2, "warmup": 1, "repeats": 3, "threads": threads, "targets": TARGETS}
    if "method" in MeasureConfig.model_fields:  # the quick timing: numbers, not precision
        measure["method"] = "rounds"
    return ExperimentConfig.model_validate(
        {
            "trainable": {"name": task, "model": "mlp", "model_args": {"hidden": [64]}},
            "measure": measure,
            **sections,
        }  # fmt: skip
    )


def dense_dir(tmp_path: Path, cfg: ExperimentConfig) -> Path:
    model, _ = trained_mlp((64,), epochs=4)
    directory = tmp_path / "dense"
    save_checkpoint(directory, model, {"loop": {}},
                    {"epoch": 0, "history": [], "trainable": cfg.trainable.model_dump()})  # fmt: skip
    return directory


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A structured-pruned variant (no fine-tune) of a digits MLP on a task whose validation
    labels are shifted (so validation and test numbers differ), on torch and ORT, 2 threads."""
    cfg = config("tests.tasks:SHIFTED_VAL",
                 compression={"prune": {"method": "structured", "sparsity": 0.75}})  # fmt: skip
    dense = load_dense(Setup.of(cfg), dense_dir(tmp_path_factory.mktemp("v"), cfg))
    model = compress_for_training(
        copy.deepcopy(dense.model), cfg.compression, dense.task, dense.calibration
    )
    return dense, judge(dense, model, cfg), cfg


def test_each_drop_is_measured_on_its_own_split(judged):
    """Validation drop = dense validation - variant validation, test drop likewise, on every
    target; the two differ here, so a drop recorded from the other split shows."""
    _, r, _ = judged
    m = r.metrics
    for sfx in ("", f".{ORT}"):
        val_drop = m["baseline_val_accuracy"] - m[f"val_accuracy{sfx}"]
        test_drop = m["baseline_accuracy"] - m[f"accuracy{sfx}"]
        assert abs(val_drop - test_drop) > 0.05  # the test can tell them apart
        assert m[f"val_accuracy_drop{sfx}"] == pytest.approx(val_drop, abs=1e-9)
        assert m[f"accuracy_drop{sfx}"] == pytest.approx(test_drop, abs=1e-9)
        assert m[f"val_accuracy{sfx}"] < 0.3 < m[f"accuracy{sfx}"]  # shifted labels: val ~0
    assert r.val_drop.n == m["n_val"] == len(load_splits(0).val)


def test_each_speedup_is_against_the_dense_model_on_the_same_runtime(judged):
    _, r, _ = judged
    m = r.metrics
    for key, backend, sfx in (("torch_b64", TORCH_FP32, ""), (ORT, ORT_FP32, f".{ORT}")):
        t = r.targets[key]
        assert t.family_baseline.backend == backend and t.torch_baseline.backend == TORCH_FP32
        family = speedup(t.family_baseline.latency, t.measurement.latency)
        vs_torch = speedup(t.torch_baseline.latency, t.measurement.latency)
        assert t.vs_family.speedup == family and t.vs_torch.speedup == vs_torch
        assert m[f"speedup{sfx}"] == family.value
        assert m[f"speedup_vs_torch{sfx}"] == vs_torch.value
        assert m[f"baseline_latency_p50_ms{sfx}"] == t.family_baseline.latency_p50_ms
        assert m[f"torch_latency_p50_ms{sfx}"] == t.torch_baseline.latency_p50_ms
    ort = r.targets[ORT]
    assert ort.family_baseline.latency != ort.torch_baseline.latency  # two timed models


def test_every_runtime_runs_on_the_configured_threads(judged):
    dense, r, cfg = judged
    threads = cfg.measure.threads
    for t in r.targets.values():
        assert t.measurement.threads == t.family_baseline.threads == threads
        assert t.torch_baseline.threads == threads
        assert r.metrics["threads"] == threads
    sessions = [r.targets[ORT].built.runner._session, dense.runners.ort.runner._session]
    for s in sessions:  # what ONNX Runtime was really told
        assert s.get_session_options().intra_op_num_threads == threads


def test_each_targets_latency_method_is_recorded_as_it_was_timed(judged):
    """The run's tags say how each latency was timed (calls per block for this model,
    priority granted or refused), per target, from the measurement itself."""
    _, r, _ = judged
    tags = latency_method_tags(r)
    assert set(tags) == {"accelab.latency_method", f"accelab.latency_method.{ORT}"}
    for key, t in r.targets.items():
        method = tags["accelab.latency_method" + ("" if key == "torch_b64" else f".{key}")]
        assert method == t.measurement.latency.method
        assert method == "rounds"  # this config's quick timing; blocks: see the 4-bit test


def test_sizes_are_the_real_files_of_each_model(judged):
    _, r, _ = judged
    m = r.metrics
    torch_t, ort_t = r.targets["torch_b64"], r.targets[ORT]
    assert m["size_mb"] == serialized_size_bytes(torch_t.built.runner.model) / MB
    assert m[f"size_mb.{ORT}"] == len(ort_t.built.onnx) / MB
    # 75% of the hidden units removed: both files are far smaller than the dense ones
    assert m["size_mb"] < 0.5 * m["baseline_size_mb"]
    assert m[f"size_mb.{ORT}"] < 0.5 * ort_t.family_baseline.size_bytes / MB
    assert m["size_ratio"] == pytest.approx(m["size_mb"] * MB / torch_t.family_baseline.size_bytes)


def input_scale_onnx(data: bytes) -> float:
    graph = onnx.load_from_string(data).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    first = next(n for n in graph.node if n.op_type == "QuantizeLinear")
    return float(inits[first.input[1]])


def input_scale_torch(model) -> float:
    return float(next(v for k, v in model.state_dict().items() if k.endswith("scale_0")))


def test_static_int8_is_calibrated_on_training_data(tmp_path):
    cfg = config("tests.tasks:SCALED", threads=1,
                 compression={"quant": {"bits": 8, "scheme": "static"}})  # fmt: skip
    train_x = tasks.SCALED.load_splits(0).train.tensors[0]
    calibration = Calibration.of(tasks.SCALED, cfg.trainable.data_seed, cfg.train.batch_size)
    batches = calibration.batches(cfg.compression.quant.calibration_batches)  # first, in order
    n = cfg.train.batch_size * cfg.compression.quant.calibration_batches
    assert torch.equal(torch.cat(batches), train_x[:n])
    wide = float(train_x.max() - train_x.min()) / 255  # the training range in int8 steps
    # what the ONNX Runtime and torch targets were calibrated on: an 8x wider range if
    # validation or test inputs were used
    dense = load_dense(Setup.of(cfg), dense_dir(tmp_path, cfg))
    r = judge(dense, copy.deepcopy(dense.model), cfg)
    assert input_scale_onnx(r.targets[ORT].built.onnx) < 2 * wide
    assert (
        input_scale_torch(finalize(dense.model, cfg.compression.quant, dense.calibration).model)
        < 3 * wide
    )


def test_each_targets_quality_is_the_variants_own(judged):
    """Each target's accuracy is its own variant runner scored on the test split (75% of
    the hidden units gone: not the dense model's accuracy), and its drop is against dense."""
    from accelab.measure import per_example
    from accelab.measure.quality import estimate

    dense, r, _ = judged
    m = r.metrics
    for key, sfx in (("torch_b64", ""), (ORT, f".{ORT}")):
        runner = r.targets[key].built.runner
        own = estimate(per_example(runner, dense.splits.test, dense.task), dense.task.metric)
        assert m[f"accuracy{sfx}"] == own.value
        assert abs(own.value - m["baseline_accuracy"]) > 0.02
        assert m[f"accuracy_drop{sfx}"] == pytest.approx(m["baseline_accuracy"] - own.value)


def test_a_simulated_backend_is_given_no_speed(tmp_path):
    """4 bits: simulated on torch (fake-quant: quality and a computed size, never a speed),
    a real int4 kernel on ONNX Runtime (timed next to dense ORT)."""
    cfg = config("digits", threads=1, compression={"quant": {"bits": 4}})
    blocks = {"method": "blocks", "min_blocks": 6, "max_seconds": 0.3, "target_precision": 1}
    cfg = cfg.model_copy(update={"measure": cfg.measure.model_copy(update=blocks)})
    dense = load_dense(Setup.of(cfg), dense_dir(tmp_path, cfg))
    r = judge(dense, copy.deepcopy(dense.model), cfg)
    t, m = r.targets["torch_b64"], r.metrics
    assert t.measurement.simulated and t.measurement.latency is None
    assert t.vs_family.speedup is None and t.vs_torch.speedup is None
    assert m["simulated"] == 1.0 and m["packed_size_mb"] < m["size_mb"]
    assert not {"speedup", "speedup_vs_torch", "latency_p50_ms", "throughput_sps"} & set(m)
    assert m[f"simulated.{ORT}"] == 0.0 and m[f"speedup.{ORT}"] > 0
    tags = latency_method_tags(r)
    assert tags["accelab.latency_method"] == "simulated"
    method = tags[f"accelab.latency_method.{ORT}"]  # as timed: 1 thread, so priority too
    assert method == r.targets[ORT].measurement.latency.method
    assert method.startswith("blocks, ") and "per block" in method and "priority" in method
