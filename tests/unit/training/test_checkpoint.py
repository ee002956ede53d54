"""Tensors-only checkpoints: round trip, and refusal of pickled objects."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from accelab.errors import UsageError
from accelab.training.checkpoint import load_checkpoint, rng_state, save_checkpoint
from trainables.digits import TASK


def write(tmp_path: Path, train_state) -> Path:
    model = TASK.build_model("mlp", hidden=[16])
    save_checkpoint(tmp_path, model, train_state, {"epoch": 0, "history": []})
    return tmp_path


def test_round_trip(tmp_path: Path):
    model = TASK.build_model("mlp", hidden=[16])
    opt = torch.optim.Adam(model.parameters())
    model(torch.zeros(2, 1, 8, 8)).sum().backward()
    opt.step()
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    state = {
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "loop": {"epoch": 0},
    }
    save_checkpoint(tmp_path, model, state, {"epoch": 0, "history": []})
    weights, loaded, meta = load_checkpoint(tmp_path)
    assert meta["epoch"] == 0
    assert torch.equal(weights["1.weight"], model[1].weight)
    assert loaded["scaler"]["scale"] == scaler.get_scale()


class Payload:
    def __reduce__(self):  # would run code on a plain pickle.load
        return (print, ("pwned",))


def test_pickled_object_is_refused(tmp_path: Path):
    write(tmp_path, {"loop": {"epoch": 0}, "extra": collections.OrderedDict(a=Payload())})
    with pytest.raises(UsageError, match="refused to load"):
        load_checkpoint(tmp_path)


def test_missing_checkpoint_is_named(tmp_path: Path):
    with pytest.raises(UsageError, match="not an accelab checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_an_outage_is_retried_and_a_bug_is_raised_at_once():
    """The driver retries MLflow while it is unreachable, but a deterministic error (an
    export that cannot work) must not be retried for a minute and blamed on MLflow."""
    from mlflow.exceptions import MlflowException

    from accelab.training.sync import transient, with_retry

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise MlflowException(
                "API request to http://127.0.0.1:1/api failed: Max retries exceeded"
            )
        return "ok"

    assert with_retry(flaky, grace_s=10, every_s=0.01) == "ok" and len(calls) == 3
    calls.clear()

    def broken():
        calls.append(1)
        raise RuntimeError("Expected tensor for argument #1 'indices' to have scalar type Long")

    with pytest.raises(RuntimeError, match="indices"):
        with_retry(broken, grace_s=10, every_s=0.01)
    assert len(calls) == 1
    assert transient(ConnectionRefusedError()) and not transient(ValueError("bad shape"))


def test_a_replayed_step_is_logged_once(tmp_path: Path):
    """Restarts and the checkpoint replay write an epoch again: MLflow keeps one value."""
    from mlflow.tracking import MlflowClient

    from accelab.tracking.client import log_metrics_once

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("once", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(exp).info.run_id
    assert log_metrics_once(client, run_id, 0, {"val_accuracy": 0.9, "train_loss": 0.3})
    assert not log_metrics_once(client, run_id, 0, {"val_accuracy": 0.8, "train_loss": 0.4})
    assert log_metrics_once(client, run_id, 1, {"val_accuracy": 0.95, "train_loss": 0.2})
    history = client.get_metric_history(run_id, "val_accuracy")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.9), (1, 0.95)]
