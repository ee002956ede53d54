"""Real Ray Train DDP on digits, real MLflow: accuracy, replica sync, AMP, fault recovery."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from accelab.preflight import load_config
from accelab.training.launcher import run_training
from tests.conftest import CONFIGS
from tests.helpers_torch import accuracy as evaluate_accuracy
from trainables.digits import TASK


def history(client: MlflowClient, run_id: str) -> dict[str, list[int]]:
    keys = client.get_run(run_id).data.metrics
    return {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in keys}


@pytest.mark.ray
def test_two_worker_ddp_reaches_90_percent_and_replicas_agree(store, tmp_path):
    cfg = load_config(CONFIGS / "digits.yaml", [*store["overrides"], "train.epochs=4"])
    outcome = run_training(cfg)
    client = MlflowClient(store["tracking_uri"])
    run = client.get_run(outcome.mlflow_run_id)

    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] >= 0.90
    assert outcome.metrics["test_accuracy"] == pytest.approx(run.data.metrics["test_accuracy"])
    assert run.data.metrics["ddp_param_max_abs_diff"] == 0.0  # both ranks hold identical weights
    assert run.data.tags["accelab.world_size"] == "2"
    # auto measured fp32 against bf16 on this CPU and says what it saw
    assert run.data.tags["accelab.precision"] in ("fp32", "bf16")
    assert run.data.tags["accelab.precision_reason"].startswith("auto (measured): fp32 ")
    assert run.data.params["train.epochs"] == "4"
    once = {"test_accuracy", "ddp_param_max_abs_diff", "overhead_before_fit_s", "fit_s"}
    per_run = history(client, outcome.mlflow_run_id)
    assert {k: len(v) for k, v in per_run.items() if k in once} == {k: 1 for k in once}
    assert {k: v for k, v in per_run.items() if k not in once} == {
        k: [0, 1, 2, 3] for k in set(per_run) - once
    } and {"val_accuracy", "train_loss", "samples_per_s"} <= set(per_run)

    # The logged model is tensors-only and reproduces the reported held-out accuracy.
    path = client.download_artifacts(
        outcome.mlflow_run_id, "model/model.safetensors", str(tmp_path)
    )
    model = TASK.build_model("cnn")
    model.load_state_dict(load_file(path))
    test = TASK.load_splits(0).test
    assert evaluate_accuracy(model, test) == pytest.approx(
        run.data.metrics["test_accuracy"], abs=1e-9
    )


@pytest.mark.ray
def test_fp16_inf_step_skipped_and_failure_resumes_with_scaler_state(store):
    cfg = load_config(
        CONFIGS / "digits.yaml",
        [
            *store["overrides"],
            "train.epochs=4",
            "train.precision=fp16",
            "faults.inf_grad_at_step=3",
            "faults.fail_at_epoch=2",
            "faults.fail_rank=1",
            "run.max_failures=1",
        ],
    )
    outcome = run_training(cfg)
    client = MlflowClient(store["tracking_uri"])
    run = client.get_run(outcome.mlflow_run_id)
    m = run.data.metrics

    # The worker group was restarted once and finished the planned epochs, not more.
    assert run.data.tags["accelab.restarts"] == "1"
    assert outcome.metrics["epoch"] == 3
    # Exactly one MLflow value per step, despite the replayed epoch.
    assert history(client, outcome.mlflow_run_id)["val_accuracy"] == [0, 1, 2, 3]
    assert history(client, outcome.mlflow_run_id)["train_loss"] == [0, 1, 2, 3]
    # The inf gradient was skipped by GradScaler: weights unchanged, one skipped step.
    assert m["fault_inf_step_weight_change"] == 0.0
    assert m["amp_skipped_steps"] == 1
    # Scaler state survived the restart: the backed-off scale (65536 / 2) was restored.
    scales = [
        v.value
        for v in sorted(
            client.get_metric_history(run.info.run_id, "amp_scale"), key=lambda v: v.step
        )
    ]
    assert scales == [32768.0] * 4
    assert m["test_accuracy"] >= 0.85
    assert torch.isfinite(torch.tensor(m["train_loss"]))
