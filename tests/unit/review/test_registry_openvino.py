"""A variant measured on an OpenVINO target is registered like ORT/torch ones: its run logs
the IR the target ran as the MLflow Model ``openvino_model`` (a pyfunc reading the .xml/.bin
with ``openvino.Core``, no pickle), tagged with backend and targets; the registry registers
it for a recommendation measured on that backend, and the registered model loads back with
``mlflow.pyfunc`` and gives the outputs the measured runner gave (same IR, same compile
settings: f32 weights not compressed to fp16, the f32 hint kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from accelab.compress.pipeline import Deployable
from accelab.config.schema import ExperimentConfig
from accelab.review.registry import logged_models, register
from accelab.tracking import names
from accelab.tracking.models import OPENVINO_MODEL_NAME
from accelab.variant.judge import VariantResult
from accelab.variant.record import log_openvino_targets_model
from accelab.variant.targets import Exports, TargetResult, build_on, targets_of
from tests.helpers_torch import trained_mlp
from tests.unit.review.test_registry_served import load_and_predict_quietly, summary
from trainables.digits import TASK

pytest.importorskip("openvino")
pytest.importorskip("nncf")


def config(bits: int) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": [32]}},
        "compression": {"quant": {"bits": bits}},
        "measure": {"threads": 1, "batch_size": 8, "targets": [{"runtime": "openvino"}]},
        "registry": {"model_name": "m"}, "sweep": {},
    })  # fmt: skip


def test_an_openvino_target_registers_its_ir_which_loads_back_with_the_same_outputs(tmp_path):
    """openvino-f32: the f32 hint and f32 weights are what an fp16 IR or a dropped compile
    config would change (NNCF int8 goes through the same code: checked by hand)."""
    model, splits = trained_mlp((32,), epochs=1)
    cfg = config(32)
    built = build_on("openvino", model, cfg, TASK, Exports(model), splits.test.tensors[0])
    (target,) = targets_of(cfg)
    r = VariantResult(
        {target.key: TargetResult(target, built.backend, built=built)},
        Deployable(model, "torch-fp32", False, "fp32"), model,
    )  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(exp).info.run_id

    log_openvino_targets_model(uri, run_id, r, TASK)

    (logged,) = [m for m in logged_models(client, run_id) if m.name == OPENVINO_MODEL_NAME]
    assert logged.tags[names.BACKEND] == built.backend
    assert logged.tags[names.TARGET] == target.key == "ov_b8"
    files = {p.name for p in Path(logged.artifact_location.removeprefix("file://")).rglob("*")}
    assert {"model.xml", "model.bin"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))]
    said: list[str] = []
    reg = register(client, cfg, summary(target.key, built.backend, run_id), "p", said.append)
    assert reg is not None, said
    version = client.get_model_version("m", reg[1])
    assert version.tags[names.BACKEND] == built.backend
    assert version.tags[names.MODEL_SHA] == logged.tags[names.MODEL_SHA]
    x = TASK.example_input(3)
    out = load_and_predict_quietly(f"models:/m/{reg[1]}")
    with torch.inference_mode():
        expected = built.runner(x).numpy()
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
