"""Real sweeps: Ray Tune + Ray Train + MLflow on digits, the CLI as users run it."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from accelab.commands.export import deployable_run
from accelab.compress.deploy import load_deployable
from accelab.training.checkpoint import save_checkpoint
from tests.conftest import CONFIGS, run_cli
from tests.helpers_torch import accuracy as evaluate_accuracy
from tests.helpers_torch import trained_mlp
from trainables.digits import TASK

HIDDEN = [256, 256]
TRIAL_METRICS = {"accuracy", "accuracy_lo", "accuracy_hi", "accuracy_drop", "accuracy_drop_lo",
                 "accuracy_drop_hi", "latency_p50_ms", "latency_p95_ms", "speedup", "speedup_lo",
                 "speedup_hi", "baseline_latency_p50_ms", "size_mb", "size_ratio", "sparsity", "bits",
                 "val_accuracy", "val_accuracy_drop", "n_test"}  # fmt: skip
SPEED = {"latency_p50_ms", "latency_p95_ms", "speedup", "speedup_lo", "speedup_hi"}


@pytest.fixture(scope="module")
def dense_checkpoint(tmp_path_factory) -> Path:
    """A dense digits MLP trained in plain torch (no Ray start-up), saved as a checkpoint."""
    model, _ = trained_mlp(tuple(HIDDEN), epochs=8)
    directory = tmp_path_factory.mktemp("dense") / "checkpoint"
    trainable = {"name": "digits", "model": "mlp", "model_args": {"hidden": HIDDEN}, "data_seed": 0}
    save_checkpoint(
        directory, model, {"loop": {}}, {"epoch": 7, "history": [], "trainable": trainable}
    )
    return directory


def sweep_yaml(
    tmp_path: Path, name: str, variants: list[dict], targets=({"runtime": "torch"},), **sweep
) -> Path:
    cfg = yaml.safe_load((CONFIGS / "digits_sweep.yaml").read_text())
    cfg["name"] = name
    cfg["trainable"]["model_args"]["hidden"] = HIDDEN
    cfg["measure"].update(repeats=20, warmup=5, rounds=3, targets=list(targets))
    cfg["sweep"].update({"space": {}, "variants": variants, **sweep})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def children(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    parent = client.search_runs([exp.experiment_id], "tags.`accelab.kind` = 'sweep'")
    trials = client.search_runs([exp.experiment_id], "tags.`accelab.kind` = 'trial'")
    return parent, trials


@pytest.mark.ray
def test_small_sweep_records_frontier_and_a_reloadable_recommendation(
    tmp_path, store, dense_checkpoint
):
    variants = [
        {"compression.quant.bits": 8},
        {"compression.prune.method": "unstructured", "compression.prune.sparsity": 0.5},
        {"compression.prune.method": "unstructured", "compression.prune.sparsity": 0.5, "compression.quant.bits": 8},
        {"compression.prune.method": "structured", "compression.prune.sparsity": 0.5},
        {"compression.quant.bits": 4},
        # on a 256-wide MLP int8 is slower than fp32 here: the fine-tuned fp32 one should win
        {"compression.prune.method": "structured", "compression.prune.sparsity": 0.5,
         "finetune.epochs": 1},
    ]  # fmt: skip
    targets = ({"runtime": "torch"}, {"runtime": "onnxruntime", "batch_size": 1})
    path = sweep_yaml(tmp_path, "small-sweep", variants, targets)
    proc = run_cli(
        "sweep",
        str(path),
        *store["overrides"],
        f"sweep.baseline_from={dense_checkpoint}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "[ 6/6 done, 0 running]" in out and "recommendation for torch, batch 64: trial" in out
    assert "target onnxruntime, batch 1: noise floor" in out  # every target gets its frontier
    assert "review in the MLflow UI: accelab ui --tracking-uri sqlite:///" in out
    assert "Traceback" not in proc.stderr

    client = MlflowClient(store["tracking_uri"])
    (parent,), trials = children(client, "small-sweep")
    assert parent.info.status == "FINISHED"
    assert len(trials) == 6
    assert all(t.data.tags["mlflow.parentRunId"] == parent.info.run_id for t in trials)
    assert all(t.data.tags["accelab.status"] == "ok" for t in trials)
    for t in trials:
        simulated = t.data.tags["accelab.simulated"] == "true"
        expected = TRIAL_METRICS - (SPEED if simulated else set())
        assert expected <= set(t.data.metrics), t.data.tags["accelab.trial_id"]
        assert simulated == (t.data.tags["accelab.backend"] == "fake-quant (simulated)")
        method = t.data.tags["accelab.latency_method"]  # how it was timed, as it was
        assert method == "simulated" if simulated else method.split(",")[0] in {"blocks", "rounds"}
    assert parent.data.tags["accelab.latency_method"].split(",")[0] in {"blocks", "rounds"}
    simulated = [t for t in trials if t.data.tags["accelab.simulated"] == "true"]
    assert len(simulated) == 1 and "speedup" not in simulated[0].data.metrics
    assert simulated[0].data.metrics["packed_size_mb"] < simulated[0].data.metrics["size_mb"]
    tuned = [t for t in trials if "finetune_val_accuracy" in t.data.metrics]
    assert len(tuned) == 1 and tuned[0].data.metrics["finetune_ddp_param_max_abs_diff"] == 0.0

    # pareto.csv on the parent matches the child runs.
    local = Path(client.download_artifacts(parent.info.run_id, "", str(tmp_path / "artifacts")))
    assert (local / "pareto.png").stat().st_size > 10_000
    with open(local / "pareto.csv") as fh:
        rows = {r["trial_id"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {t.data.tags["accelab.trial_id"] for t in trials}
    for t in trials:
        assert float(rows[t.data.tags["accelab.trial_id"]]["accuracy"]) == pytest.approx(
            t.data.metrics["accuracy"]
        )

    # The recommended model reloads and gives the reported test accuracy.
    rec_id = parent.data.tags["accelab.recommended_run_id"]
    rec = client.get_run(rec_id)
    assert rec.data.metrics["val_accuracy_drop"] <= 0.01 and rec.data.metrics["speedup"] > 1.0
    assert parent.data.metrics["noise_floor"] >= 0.0 and "aa_speedup" in parent.data.metrics
    assert "noise_floor.ort_b1" in parent.data.metrics  # an A/A control per target
    assert parent.data.tags["accelab.recommendation.ort_b1"].startswith(
        "recommendation for onnxruntime"
    )
    ort = [t for t in trials if "speedup_vs_torch.ort_b1" in t.data.metrics]
    assert len(ort) == 6  # every trial (4-bit too: MatMulNBits) was measured on ONNX Runtime
    # The sweep keeps no copy of the model: it points at the trial (accelab export resolves it).
    assert "recommended_model" not in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert deployable_run(client, parent.info.run_id) == rec_id
    deployable = client.download_artifacts(rec_id, "deployable_model", str(tmp_path / "rec"))
    model = load_deployable(deployable)
    assert evaluate_accuracy(model, TASK.load_splits(0).test) == pytest.approx(
        rec.data.metrics["accuracy"], abs=1e-9
    )

    # Every trial's MLflow Models name their backend and target: the ONNX file the ONNX
    # Runtime target ran, and the torch.export program of what the torch target ran (torch's
    # int8 modules cannot be exported: the run says why instead).
    for t in trials:
        models = client.search_logged_models(
            [parent.info.experiment_id], filter_string=f"source_run_id = '{t.info.run_id}'"
        )
        by_name = {m.name: m.tags for m in models}
        assert by_name["model"]["accelab.backend"] == t.data.tags["accelab.backend.ort_b1"]
        assert by_name["model"]["accelab.target"] == "ort_b1"
        if t.data.tags["accelab.backend"].startswith("torch-int8"):
            assert "torch_model" not in by_name
            assert "torch.export" in t.data.tags["accelab.torch_model_error"]
        else:
            assert by_name["torch_model"]["accelab.backend"] == t.data.tags["accelab.backend"]
            assert by_name["torch_model"]["accelab.target"] == "torch_b64"

    # A teammate sees the same recommendation from MLflow alone.
    report = run_cli("report", "small-sweep", "--tracking-uri", store["tracking_uri"], cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    rec_line = next(line for line in out.splitlines() if line.startswith("recommendation for"))
    assert rec_line in report.stdout


@pytest.mark.ray
def test_trial_breaking_max_latency_is_stopped_before_finetuning(tmp_path, store, dense_checkpoint):
    variants = [
        {
            "compression.prune.method": "structured",
            "compression.prune.sparsity": 0.5,
            "finetune.epochs": 3,
        }
    ]
    path = sweep_yaml(tmp_path, "latency-sweep", variants)
    proc = run_cli(
        "sweep", str(path), *store["overrides"], f"sweep.baseline_from={dense_checkpoint}",
        "sweep.constraints.max_latency_ms=0.000001", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store["tracking_uri"])
    _, (trial,) = children(client, "latency-sweep")
    assert trial.data.tags["accelab.status"].startswith("stopped before fine-tuning: latency")
    assert not any(
        k.startswith("finetune_") for k in trial.data.metrics
    )  # no training compute spent
    assert "latency_p50_ms" in trial.data.metrics  # but what was measured is recorded
    assert "recommendation for torch, batch 64: none" in proc.stdout


@pytest.mark.ray
def test_killed_sweep_resumes_without_duplicate_or_missing_trials(
    tmp_path, store, dense_checkpoint
):
    variants = [{"compression.prune.method": "none"},
                {"compression.prune.method": "unstructured", "compression.prune.sparsity": 0.5}]  # fmt: skip
    path = sweep_yaml(
        tmp_path, "resume-sweep", variants, space={"compression.quant.bits": {"grid": [32, 8, 4]}}
    )
    args = [sys.executable, "-m", "accelab", "sweep", str(path), *store["overrides"],
            f"sweep.baseline_from={dense_checkpoint}"]  # fmt: skip
    log = tmp_path / "first.log"
    with open(log, "w") as fh:
        first = subprocess.Popen(
            args, cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 300
        while (
            "[ 2/6 done" not in log.read_text() and time.time() < deadline and first.poll() is None
        ):
            time.sleep(0.5)
        assert "[ 2/6 done" in log.read_text(), log.read_text()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    done_before = {
        line.split()[5].rstrip(":") for line in log.read_text().splitlines() if "] done " in line
    }
    resumed_at = time.time() * 1000

    second = subprocess.run(
        [*args, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming sweep" in second.stdout
    client = MlflowClient(store["tracking_uri"])
    parents, trials = children(client, "resume-sweep")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    ids = [t.data.tags["accelab.trial_id"] for t in trials]
    assert len(ids) == 6 and len(set(ids)) == 6  # the configured total: none lost, none twice
    assert all(t.data.tags["accelab.status"] == "ok" for t in trials)
    for t in trials:  # one value per metric per trial
        assert len(client.get_metric_history(t.info.run_id, "accuracy")) == 1
        if t.data.tags["accelab.trial_id"] in done_before:  # finished trials were not rerun
            assert t.info.end_time < resumed_at


@pytest.mark.ray
def test_shipped_sweep_finds_a_model_1_5x_faster_within_one_point(tmp_path, store):
    proc = run_cli(
        "sweep", str(CONFIGS / "digits_sweep.yaml"), *store["overrides"], cwd=tmp_path, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store["tracking_uri"])
    (parent,), trials = children(client, "digits-sweep")
    # 8 recipes: dense, int8 x3 (per-channel; ORT's dynamic and static defaults), pruned x4
    assert len(trials) == 8
    rec = client.get_run(parent.data.tags["accelab.recommended_run_id"]).data.metrics
    print(f"\nshipped sweep recommendation: {parent.data.tags['accelab.recommendation']}")
    # faster than dense beyond the sweep's own A/A noise floor (not a fixed ratio: the
    # machine is shared, and the floor measures how noisy it was during this sweep)
    assert rec["speedup"] > 1.0 + parent.data.metrics["noise_floor"]
    assert rec["accuracy_drop"] <= 0.01


@pytest.mark.ray
def test_optuna_multi_objective_search_runs_the_requested_trials(tmp_path, store, dense_checkpoint):
    path = sweep_yaml(
        tmp_path, "optuna-sweep", [], search="optuna", num_samples=3,
        space={"compression.prune.sparsity": {"uniform": [0.2, 0.6]},
               "compression.prune.method": {"choice": ["structured"]},
               "compression.quant.bits": {"choice": [8, 32]}},
    )  # fmt: skip
    proc = run_cli(
        "sweep",
        str(path),
        *store["overrides"],
        f"sweep.baseline_from={dense_checkpoint}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "search=optuna" in proc.stdout
    client = MlflowClient(store["tracking_uri"])
    (parent,), trials = children(client, "optuna-sweep")
    assert len(trials) == 3 and parent.info.status == "FINISHED"
    sparsities = [float(t.data.params["searched.compression.prune.sparsity"]) for t in trials]
    assert all(0.2 <= s <= 0.6 for s in sparsities) and len(set(sparsities)) == 3
