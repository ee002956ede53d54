"""What is registered is what was measured and served (a real sqlite registry and real
MLflow Models; no Ray): the registered recommendation is the ONNX Runtime target's (the
trials' MLflow Models are the ONNX files those targets ran), a version whose MLflow Model
runs another backend than the one measured is refused, and a rerun that recommends the
same file registers no new version."""

from __future__ import annotations

import hashlib

import pytest
from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.export.onnx import to_onnx
from accelab.review.registry import register, served_summary
from accelab.sweep.pareto import Constraints
from accelab.sweep.summary import MetricInfo, SweepSummary, TrialRow
from accelab.tracking.models import log_onnx_model
from accelab.variant.record import MODEL_SHA_TAG
from tests.helpers_torch import trained_mlp
from trainables.digits import TASK


def summary(target: str, backend: str, run_id: str = "", speedup: float = 2.0) -> SweepSummary:
    row = TrialRow("t1", run_id=run_id, speedup=speedup, speedup_lo=speedup, speedup_hi=speedup,
                   q_drop=0.0, q_drop_lo=0.0, q_drop_hi=0.0, n_test=270, backend=backend)  # fmt: skip
    return SweepSummary("parent", (target, target), MetricInfo(), {"noise_floor": 0.05},
                        Constraints(0.01), [], [row], [], [], row)  # fmt: skip


def test_the_served_summary_is_the_onnx_runtime_targets():
    torch_b64 = summary("torch_b64", "torch-int8-x86")
    ort_b1 = summary("ort_b1", "ort-int8-dynamic")
    assert served_summary([torch_b64, ort_b1]) is ort_b1
    assert served_summary([torch_b64]) is torch_b64  # then register checks the backend


@pytest.fixture
def setup(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    model, _ = trained_mlp((32,), epochs=1)
    onnx = to_onnx(model, TASK.example_input(2))
    cfg = ExperimentConfig.model_validate({"registry": {"model_name": "m"}, "sweep": {}})

    def trial(backend: str) -> str:
        run_id = client.create_run(exp).info.run_id
        tags = {"accelab.backend": backend, MODEL_SHA_TAG: hashlib.sha256(onnx).hexdigest()}
        log_onnx_model(uri, run_id, onnx, TASK, model, tags)
        return run_id

    return client, cfg, trial


def test_a_model_that_runs_another_backend_than_measured_is_not_registered(setup):
    client, cfg, trial = setup
    said: list[str] = []
    run_id = trial("ort-fp32")  # what the MLflow Model runs
    assert (
        register(client, cfg, summary("torch_b64", "torch-int8-x86", run_id), "p", said.append)
        is None
    )
    assert "not registered" in said[0] and "torch-int8-x86" in said[0] and "ort-fp32" in said[0]
    assert client.search_model_versions("name = 'm'") == []


def test_a_rerun_recommending_the_same_file_registers_no_new_version(setup):
    client, cfg, trial = setup
    said: list[str] = []
    first = register(
        client, cfg, summary("ort_b1", "ort-fp32", trial("ort-fp32")), "p", said.append
    )
    assert first is not None
    version = client.get_model_version("m", first[1])
    assert version.tags[MODEL_SHA_TAG] and version.tags["accelab.backend"] == "ort-fp32"
    assert "float32 (batch, 1, 8, 8)" in version.description  # the input's preprocessing
    again = register(
        client, cfg, summary("ort_b1", "ort-fp32", trial("ort-fp32")), "p", said.append
    )
    assert again is None and "already serves this model" in said[-1]
    assert len(client.search_model_versions("name = 'm'")) == 1
