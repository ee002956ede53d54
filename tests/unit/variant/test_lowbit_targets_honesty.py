"""What a judged low-bit variant reports on ONNX Runtime and OpenVINO, without Ray: the
dense model on each runtime runs on ``measure.threads`` too, NNCF's int8 is calibrated on
training data, and an int4 model's size is its own file's, never the dense one's."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from accelab.backends import ORT_FP32, OV_F32
from accelab.config.schema import ExperimentConfig
from accelab.training.checkpoint import save_checkpoint
from accelab.variant.judge import MB, judge, load_dense
from accelab.variant.setup import Setup
from tests import tasks
from tests.helpers_torch import trained_mlp

pytest.importorskip("openvino")
pytest.importorskip("nncf")

ORT, OV = "ort_b16", "ov_b16"
TARGETS = [{"runtime": "torch"}, {"runtime": "onnxruntime", "batch_size": 16},
           {"runtime": "openvino", "batch_size": 16}]  # fmt: skip


def judged(tmp_path: Path, task: str, quant: dict, threads: int = 2):
    cfg = ExperimentConfig.model_validate({
        "trainable": {"name": task, "model": "mlp", "model_args": {"hidden": [64]}},
        "compression": {"quant": quant},
        "measure": {"method": "rounds", "rounds": 2, "warmup": 1, "repeats": 3,
                    "threads": threads, "targets": TARGETS},
    })  # fmt: skip
    model, _ = trained_mlp((64,), epochs=2)
    save_checkpoint(tmp_path, model, {"loop": {}},
                    {"epoch": 0, "history": [], "trainable": cfg.trainable.model_dump()})  # fmt: skip
    dense = load_dense(Setup.of(cfg), tmp_path)
    return dense, judge(dense, copy.deepcopy(dense.model), cfg)


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    """Int8 on a task whose validation and test inputs are 8x the training inputs."""
    return judged(tmp_path_factory.mktemp("int8"), "tests.tasks:SCALED", {"bits": 8})


@pytest.fixture(scope="module")
def int4(tmp_path_factory):
    return judged(tmp_path_factory.mktemp("int4"), "digits", {"bits": 4, "block_size": 32})


def input_high(ov_model) -> float:
    """The upper end of the range NNCF quantizes the model's input to."""
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize" and (
            op.input_value(0).get_node().get_type_name() == "Parameter"
        ):
            return float(op.input_value(2).get_node().get_data().max())
    raise AssertionError("no FakeQuantize on the input")


def test_openvino_int8_is_calibrated_on_training_data(int8):
    _, r = int8
    t = r.targets[OV]
    assert t.error is None and t.backend.startswith("openvino-int8-nncf")
    train_max = float(tasks.SCALED.load_splits(0).train.tensors[0].max())
    # validation or test inputs would give an 8x wider range
    assert input_high(t.built.runner.ov_model) < 2 * train_max


def test_the_dense_model_on_every_runtime_runs_on_the_configured_threads(int8):
    dense, r = int8
    assert dense.runners.ort.runner._session.get_session_options().intra_op_num_threads == 2
    assert dense.runners.ov.runner.setting("INFERENCE_NUM_THREADS") == "2"
    assert r.targets[OV].built.runner.setting("INFERENCE_NUM_THREADS") == "2"
    for key, family in (("torch_b64", "torch-fp32"), (ORT, ORT_FP32), (OV, OV_F32)):
        t = r.targets[key]
        assert t.family_baseline.backend == family, key
        assert t.measurement.threads == t.family_baseline.threads == t.torch_baseline.threads == 2


def test_an_int4_models_size_is_its_own_file(int4):
    _, r = int4
    m = r.metrics
    ort, ov = r.targets[ORT], r.targets[OV]
    assert "int4" in ort.backend and "int4" in ov.backend
    assert m[f"size_mb.{ORT}"] == len(ort.built.onnx) / MB
    assert m[f"size_mb.{OV}"] == ov.built.runner.size_bytes() / MB
    for key, t in ((ORT, ort), (OV, ov)):
        dense_mb = t.family_baseline.size_bytes / MB
        assert m[f"size_mb.{key}"] < dense_mb, key  # packed weights: a smaller file
        assert m[f"size_ratio.{key}"] == pytest.approx(m[f"size_mb.{key}"] / dense_mb)
