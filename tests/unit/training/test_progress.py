"""The per-epoch progress lines the driver prints from the MLflow run rank 0 writes: each
epoch once, in order, and the last one even when the store is busy when training ends."""

from __future__ import annotations

import sqlite3
import time

import pytest
from mlflow.tracking import MlflowClient

from accelab.tracking import names
from accelab.tracking.client import log_metrics_once
from accelab.training.progress import EpochProgress, format_epoch


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    """One sqlite store for the module (creating one takes seconds); a run per test."""
    return {"tracking_uri": f"sqlite:///{tmp_path_factory.mktemp('progress') / 'mlflow.db'}"}


@pytest.fixture
def run(store):
    client = MlflowClient(store["tracking_uri"])
    exp = client.get_experiment_by_name("progress") or client.create_experiment("progress")
    exp_id = exp if isinstance(exp, str) else exp.experiment_id
    return client, client.create_run(exp_id).info.run_id


def epoch(client, run_id, step, prefix=""):
    values = {"train_loss": 0.5 / (step + 1), "val_accuracy": 0.8 + step / 100, "epoch_s": 0.25}
    log_metrics_once(client, run_id, step, {prefix + k: v for k, v in values.items()})


class BusyStore(MlflowClient):
    """The real client, whose reads fail like a locked sqlite store until ``until``."""

    until = 0.0

    def get_metric_history(self, run_id, key):
        if time.monotonic() < self.until:
            raise sqlite3.OperationalError("database is locked")
        return super().get_metric_history(run_id, key)


def test_each_epoch_is_printed_once_in_order_with_its_values(store, run):
    client, run_id = run
    lines: list[str] = []
    with EpochProgress(store["tracking_uri"], run_id, 3, lines.append, interval_s=0.05):
        for step in range(3):
            epoch(client, run_id, step)
            time.sleep(0.2)
    assert lines == [
        "epoch 1/3  loss 0.5000  val_acc 0.8000  0.25 s",
        "epoch 2/3  loss 0.2500  val_acc 0.8100  0.25 s",
        "epoch 3/3  loss 0.1667  val_acc 0.8200  0.25 s",
    ]


def test_the_last_epoch_logged_just_before_exit_is_printed(store, run):
    client, run_id = run
    lines: list[str] = []
    with EpochProgress(store["tracking_uri"], run_id, 2, lines.append, interval_s=60):
        epoch(client, run_id, 0)
        epoch(client, run_id, 1)
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]


def test_a_resumed_run_prints_only_new_epochs_and_the_restart(store, run):
    client, run_id = run
    epoch(client, run_id, 0, "finetune_")
    client.set_tag(run_id, names.RESTARTS, "0")
    lines: list[str] = []
    with EpochProgress(
        store["tracking_uri"], run_id, 2, lines.append, prefix="finetune_", interval_s=60
    ):
        client.set_tag(run_id, names.RESTARTS, "1")
        epoch(client, run_id, 1, "finetune_")
    assert lines == [
        "resumed from the last checkpoint (restart 1)",
        "epoch 2/2  loss 0.2500  val_acc 0.8100  0.25 s",
    ]


def test_a_store_busy_when_training_ends_still_gets_the_last_epoch_printed(store, run):
    client, run_id = run
    lines: list[str] = []
    progress = EpochProgress(store["tracking_uri"], run_id, 2, lines.append, interval_s=0.05)
    progress.client = BusyStore(store["tracking_uri"])
    with progress:
        epoch(client, run_id, 0)
        time.sleep(0.3)
        epoch(client, run_id, 1)
        BusyStore.until = time.monotonic() + 2.0  # longer than a few polls at 0.05 s
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]


def test_a_store_that_stays_unreadable_is_said_once_not_silently_dropped(store, run):
    client, run_id = run
    lines: list[str] = []
    progress = EpochProgress(
        store["tracking_uri"], run_id, 1, lines.append, interval_s=0.05, final_s=0.5
    )
    progress.client = BusyStore(store["tracking_uri"])
    BusyStore.until = time.monotonic() + 60
    started = time.monotonic()
    with progress:
        epoch(client, run_id, 0)
    BusyStore.until = 0.0
    assert lines == [
        "(epoch lines not read back from MLflow: OperationalError: database is locked)"
    ]
    assert 0.5 <= time.monotonic() - started < 10


def test_format_epoch_names_the_task_metric_and_skips_what_is_absent():
    values = {"finetune_train_loss": 1.23456, "finetune_val_perplexity": 7.5}
    line = format_epoch(4, 10, values, prefix="finetune_", metric="perplexity")
    assert line == "epoch 5/10  loss 1.2346  val_perplexity 7.5000"
