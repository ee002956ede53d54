"""Data beyond memory: ``accelab train`` on 2 DDP workers over a 500 MB on-disk data set
read one example at a time (``tests.streaming``): each worker trains on its shard and
evaluates, and no worker's memory grows by more than 200 MB, less than half of the data."""

from __future__ import annotations

import json
import re

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import CONFIGS, REPO, run_cli
from tests.streaming import RECORD, write_splits

TOTAL = 500_000_000
LIMIT = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def stream_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stream")
    write_splits(directory, TOTAL)
    return directory


def test_two_workers_train_and_evaluate_on_500_mb_with_bounded_memory(stream_dir, store, tmp_path):
    on_disk = sum(p.stat().st_size for p in stream_dir.glob("*.bin"))
    assert on_disk > 0.99 * TOTAL
    proc = run_cli(
        "train", str(CONFIGS / "digits.yaml"), "trainable.name=tests.streaming:TASK",
        "trainable.model=pooled_mlp", "train.epochs=1", "train.batch_size=256", "train.lr=0.003",
        "train.precision=fp32", "scaling.num_workers=2", *store["overrides"], cwd=tmp_path,
        env={"ACCELAB_STREAM_DIR": str(stream_dir), "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", proc.stdout).group(1)
    m = MlflowClient(store["tracking_uri"]).get_run(run_id).data.metrics
    assert m["test_accuracy"] > 0.8, m  # it learned from the streamed shards
    # the workers: each read its half of the training split plus evaluation examples
    logs = [json.loads(p.read_text()) for p in stream_dir.glob("rss-*.json")]
    workers = [log for log in logs if log["reads"] * RECORD > 0.3 * TOTAL]
    assert len(workers) == 2, logs
    # Measured here: ~27 MB on rank 1; ~160 MB on rank 0, most of it the MLflow store it
    # opens to log (sqlalchemy, alembic). Materializing the training split: ~540 MB each.
    for log in workers:
        assert log["growth"] < LIMIT, f"a worker grew by {log['growth'] / 2**20:.0f} MiB"
