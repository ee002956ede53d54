"""``accelab compress --from model.safetensors``: weights trained outside accelab (a plain
torch loop in this process, saved with ``safetensors.torch.save_file``) are the dense
model as they are; nothing dense is trained, and the baseline numbers are theirs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from tests.conftest import CONFIGS, run_cli
from tests.helpers_torch import accuracy, trained_mlp
from trainables.digits import TASK

MLP = str(CONFIGS / "digits_mlp.yaml")
POST = ["finetune.epochs=0", "measure.repeats=10", "measure.warmup=3",
        "measure.targets=[{runtime: torch}]", "compression.prune.sparsity=0.5"]  # fmt: skip


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, float]:
    model, _ = trained_mlp((128, 128), epochs=3)
    path = tmp_path_factory.mktemp("elsewhere") / "digits_mlp.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, accuracy(model, TASK.load_splits(0).test)


def runs_of_kind(store, kind: str) -> list:
    client = MlflowClient(store["tracking_uri"])
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, f"tags.`accelab.kind` = '{kind}'") if ids else []


def test_compress_from_a_plain_safetensors_file_trains_nothing_dense(weights, store, tmp_path):
    path, dense_accuracy = weights
    proc = run_cli(
        "compress", MLP, "--from", str(path), "trainable.model_args.hidden=[128,128]",
        *store["overrides"], *POST, cwd=tmp_path, env={"RAY_TMPDIR": str(tmp_path / "ray")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / "ray").exists(), "a Ray session was started"
    run_id = re.search(r"-> MLflow run ([0-9a-f]{32})", proc.stdout).group(1)
    run = MlflowClient(store["tracking_uri"]).get_run(run_id)
    assert run.data.tags["accelab.status"] == "ok"
    # the baseline is those weights, evaluated on the held-out test split
    assert run.data.metrics["baseline_accuracy"] == dense_accuracy
    assert runs_of_kind(store, "train") == []


def test_a_weights_file_of_another_width_exits_2_naming_the_first_mismatch(
    weights, store, tmp_path
):
    proc = run_cli(
        "compress", MLP, "--from", str(weights[0]), "trainable.model_args.hidden=[64,64]",
        *store["overrides"], *POST, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().endswith(
        "does not fit the configured model "
        "(size mismatch for 1.weight: [128, 64] in the file, [64, 64] in the model)"
    ), proc.stderr
    assert "MLflow run" not in proc.stdout and "Traceback" not in proc.stderr


def test_a_sweep_from_a_plain_safetensors_file_times_those_weights_as_its_baseline(
    weights, store, tmp_path
):
    path, dense_accuracy = weights
    proc = run_cli(
        "sweep", str(CONFIGS / "digits_sweep.yaml"), f"sweep.baseline_from={path}",
        "trainable.model_args.hidden=[128,128]", "sweep.space={}",
        "sweep.variants=[{compression.prune.method: none, compression.quant.bits: 8}]",
        "measure.targets=[{runtime: torch}]", "measure.repeats=10", "measure.warmup=3",
        "measure.rounds=2", *store["overrides"], cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "training the dense model" not in proc.stdout
    (parent,) = runs_of_kind(store, "sweep")
    assert parent.data.metrics["baseline_accuracy"] == dense_accuracy  # the A/A control's
    (trial,) = runs_of_kind(store, "trial")
    assert trial.data.metrics["baseline_accuracy"] == dense_accuracy
    assert runs_of_kind(store, "train") == []  # nothing dense was trained
