"""What is registered is what was measured and served (a real sqlite registry and real
MLflow Models; no Ray): the registered recommendation is the ONNX Runtime target's, else
the torch target's torch.export program; a recommendation whose run has no MLflow Model
running the backend it was measured on is refused (saying why); the registered model loads
with mlflow.pyfunc without warnings; a rerun that recommends the same file registers no
new version."""

from __future__ import annotations

import hashlib
import logging
import warnings

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from accelab.compress.quant import convert_int8_dynamic
from accelab.config.schema import ExperimentConfig
from accelab.export.onnx import to_onnx
from accelab.review.registry import logged_models, register, served_summary
from accelab.sweep.pareto import Constraints
from accelab.sweep.summary import MetricInfo, SweepSummary, TrialRow
from accelab.tracking import names
from accelab.tracking.models import TORCH_MODEL_NAME, log_onnx_model, log_torch_model
from accelab.variant.record import MODEL_SHA_TAG, UNEXPORTABLE
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

    def trial(backend: str, torch_backend: str | None = None) -> str:
        """A trial run with an ONNX MLflow Model running ``backend`` and, with
        ``torch_backend``, the torch model logged as record.py logs what torch targets ran."""
        run_id = client.create_run(exp).info.run_id
        tags = {"accelab.backend": backend, MODEL_SHA_TAG: hashlib.sha256(onnx).hexdigest()}
        log_onnx_model(uri, run_id, onnx, TASK, model, tags)
        if torch_backend in UNEXPORTABLE:
            client.set_tag(run_id, names.TORCH_MODEL_ERROR, UNEXPORTABLE[torch_backend])
        elif torch_backend:
            tags = {names.BACKEND: torch_backend, names.TARGET: "torch_b64"}
            log_torch_model(uri, run_id, model, TASK, tags)
        return run_id

    return client, cfg, trial


class Said(logging.Handler):
    """MLflow's log records at WARNING and above (requirement mismatches are logged)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(record.getMessage())


def load_and_predict_quietly(uri: str) -> np.ndarray:
    """``mlflow.pyfunc.load_model`` + predict; fails on any warning, Python's or MLflow's."""
    said = Said()
    logging.getLogger("mlflow").addHandler(said)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = mlflow.pyfunc.load_model(uri).predict(TASK.example_input(3).numpy())
    finally:
        logging.getLogger("mlflow").removeHandler(said)
    assert [str(w.message) for w in caught] == [] and said.records == []
    return out if isinstance(out, np.ndarray) else next(iter(out.values()))


def test_a_torch_only_sweep_registers_the_torch_export_program_the_torch_target_ran(setup):
    client, cfg, trial = setup
    said: list[str] = []
    run_id = trial("ort-fp32", torch_backend="torch-fp32")
    reg = register(client, cfg, summary("torch_b64", "torch-fp32", run_id), "p", said.append)
    assert reg is not None, said
    version = client.get_model_version("m", reg[1])
    assert version.tags["accelab.backend"] == "torch-fp32"
    assert version.tags["accelab.target"] == "torch_b64"
    (logged,) = [m for m in logged_models(client, run_id) if m.name == TORCH_MODEL_NAME]
    assert version.source == logged.artifact_location
    assert logged.tags["accelab.backend"] == "torch-fp32"
    model, _ = trained_mlp((32,), epochs=1)
    out = load_and_predict_quietly(f"models:/m/{reg[1]}")
    expected = model.eval()(TASK.example_input(3)).detach().numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_the_registered_onnx_model_loads_and_predicts_without_warnings(setup):
    client, cfg, trial = setup
    reg = register(client, cfg, summary("ort_b1", "ort-fp32", trial("ort-fp32")), "p", print)
    assert reg is not None
    assert load_and_predict_quietly(f"models:/m/{reg[1]}").shape == (3, 10)


def test_torch_int8_is_refused_saying_it_cannot_be_exported(setup):
    client, cfg, trial = setup
    said: list[str] = []
    run_id = trial("ort-int8-dynamic", torch_backend="torch-int8-x86")
    summ = summary("torch_b64", "torch-int8-x86", run_id)
    assert register(client, cfg, summ, "p", said.append) is None
    assert "not registered" in said[0] and "torch.export cannot trace" in said[0]
    assert client.search_registered_models() == []  # not even an empty registered model


def test_torch_int8_modules_really_cannot_be_torch_exported():
    """Why record.py does not try (UNEXPORTABLE): when torch learns to export them, this
    fails, and the torch int8 model should be logged like the others."""
    model, _ = trained_mlp((32,), epochs=1)
    with pytest.raises(Exception, match="__obj_flatten__"), torch.no_grad():
        torch.export.export(convert_int8_dynamic(model), (TASK.example_input(2),))


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
