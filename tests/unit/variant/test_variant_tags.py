"""A judged variant's MLflow run carries how each target's latency was timed (tag
``accelab.latency_method``, ``.<target key>`` for every target but the primary one), as
the measurement says, next to each target's backend."""

from __future__ import annotations

import copy
from pathlib import Path

from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.training.checkpoint import save_checkpoint
from accelab.variant.judge import judge, load_dense
from accelab.variant.record import log_variant_tags
from accelab.variant.setup import Setup
from tests.helpers_torch import trained_mlp

ORT = "ort_b16"


def test_a_variants_run_is_tagged_with_each_targets_latency_method(tmp_path: Path):
    cfg = ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": [32]}},
        "measure": {"rounds": 2, "warmup": 1, "repeats": 2, "threads": 1, "method": "rounds",
                    "targets": [{"runtime": "torch"}, {"runtime": "onnxruntime", "batch_size": 16}]},
    })  # fmt: skip
    model, _ = trained_mlp((32,), epochs=1)
    save_checkpoint(tmp_path / "dense", model, {"loop": {}},
                    {"epoch": 0, "history": [], "trainable": cfg.trainable.model_dump()})  # fmt: skip
    dense = load_dense(Setup.of(cfg), tmp_path / "dense")
    r = judge(dense, copy.deepcopy(dense.model), cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    log_variant_tags(client, run_id, r)
    tags = client.get_run(run_id).data.tags
    assert tags["accelab.latency_method"] == r.targets["torch_b64"].measurement.latency.method
    assert tags[f"accelab.latency_method.{ORT}"] == r.targets[ORT].measurement.latency.method
    assert tags[f"accelab.backend.{ORT}"] == r.targets[ORT].backend
