"""Ray Data splits end to end (``configs/digits_parquet.yaml``): the digits written as
Parquet files and read with ``ray.data.read_parquet``. ``accelab train`` on 2 workers hands
them to Ray Train, which streams each worker its own half of the training split (never the
whole of it); evaluation reads val/test batch by batch; ``accelab compress`` with int8 static
quantization calibrates on the training split read the same way."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import CONFIGS, run_cli
from trainables import digits

CONFIG = str(CONFIGS / "digits_parquet.yaml")


def test_two_workers_train_on_their_ray_data_shards_then_int8_static_calibrates(store, tmp_path):
    env = {"ACCELAB_CACHE_DIR": str(tmp_path / "cache")}
    proc = run_cli(
        "train", CONFIG, "train.epochs=2", *store["overrides"], cwd=tmp_path, env=env
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Running Dataset" not in proc.stdout + proc.stderr  # accelab's lines, not Ray Data's
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", proc.stdout).group(1)
    assert any((tmp_path / "cache").glob("digits-parquet-*/train/part-*.parquet"))
    client = MlflowClient(store["tracking_uri"])
    m = client.get_run(run_id).data.metrics
    # Ray Train split the 1,257 training rows into 2 equal shards of 628 (one row left out):
    # each worker read its shard, not the whole split (that would be 2 x 1,257)
    rows = len(digits._cached_split(0)["y_train"])
    assert m["train_examples"] == 2 * (rows // 2), m
    assert m["train_examples_rank_spread"] == 0, m
    assert m["test_accuracy"] > 0.8, m  # learned, and the test split was read whole
    history = client.get_metric_history(run_id, "train_examples")
    assert [h.value for h in history] == [2 * (rows // 2)] * 2  # both epochs

    proc = run_cli(
        "compress", CONFIG, "--from", f"runs:/{run_id}", "compression.quant.bits=8",
        "compression.quant.scheme=static", "compression.quant.calibration_batches=4",
        "finetune.epochs=0", "measure.repeats=10", "measure.warmup=3",
        "measure.targets=[{runtime: torch}]", *store["overrides"], cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Running Dataset" not in proc.stdout + proc.stderr
    compressed = re.search(r"-> MLflow run ([0-9a-f]{32})", proc.stdout).group(1)
    run = client.get_run(compressed)
    assert run.data.tags["accelab.status"] == "ok", run.data.tags
    backend = run.data.tags["accelab.backend"]  # torch-int8-x86-static here
    assert "int8" in backend and backend.endswith("-static"), run.data.tags
    assert run.data.metrics["accuracy"] > 0.8, run.data.metrics
    # the dense model judged on the driver (the whole splits, streamed in order) scores what
    # the 2 workers' sharded evaluation did: each example was scored exactly once there
    assert run.data.metrics["baseline_accuracy"] == pytest.approx(m["test_accuracy"], abs=1e-9)
    assert run.data.metrics["baseline_val_accuracy"] == pytest.approx(m["val_accuracy"], abs=1e-9)
