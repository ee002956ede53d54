"""Several Ray nodes on this machine (a head with no CPUs, two 1-CPU nodes and a 2-CPU
node) and a real MLflow server: DDP across nodes, sweeps on worker nodes, and failures
survived with nothing lost. Every accelab command runs as users run it: a CLI process
joining the cluster through RAY_ADDRESS."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from accelab.tracking.client import run_artifact_paths
from tests.conftest import CONFIGS
from tests.services import MlflowServer, free_port

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def mlflow():
    server = MlflowServer(Path(tempfile.mkdtemp(prefix="mlf")), free_port())
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def cluster(mlflow):
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": temp})
    nodes = [c.add_node(num_cpus=1), c.add_node(num_cpus=1), c.add_node(num_cpus=2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    c.workers = nodes
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def shared(tmp_path: Path, mlflow) -> list[str]:
    """Overrides for the cluster: the MLflow server, and results on a folder every
    (simulated) node sees."""
    return [f"tracking.uri={mlflow.uri}", f"run.storage_path={tmp_path / 'results'}",
            f"cluster.shared_paths=[{tmp_path}]"]  # fmt: skip


def accelab(*args: str, cluster, cwd: Path, background: bool = False, **kwargs):
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    cmd = [sys.executable, "-m", "accelab", *args]
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def run_of(text: str, mlflow) -> tuple[MlflowClient, str]:
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", text).group(1)
    return MlflowClient(mlflow.uri), run_id


def steps(client: MlflowClient, run_id: str, key: str = "val_accuracy") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def wait_for_epoch(client: MlflowClient, run_id: str, epoch: int, proc, timeout=300) -> None:
    deadline = time.monotonic() + timeout
    while epoch not in steps(client, run_id):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no epoch logged in time"
        time.sleep(0.3)


def started_run(proc, mlflow) -> tuple[MlflowClient, str]:
    """Read the CLI's first lines until it names its MLflow run."""
    for line in proc.stdout:
        if match := re.search(r"-> MLflow run ([0-9a-f]{32})", line):
            return MlflowClient(mlflow.uri), match.group(1)
    raise AssertionError(f"no MLflow run announced (rc={proc.wait()})")


def train_workers() -> list:
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])


TRAIN = [str(CONFIGS / "digits.yaml"), "train.precision=fp32", "run.max_failures=2"]


def test_local_stores_are_refused_on_several_nodes(cluster, tmp_path):
    proc = accelab("train", *TRAIN, f"tracking.uri=sqlite:///{tmp_path}/m.db",
                   f"run.storage_path={tmp_path}/results", cluster=cluster, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "tracking.uri: sqlite:///" in proc.stderr and "MLflow server on the head" in proc.stderr
    assert "run.storage_path:" in proc.stderr and "cluster.shared_paths" in proc.stderr
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "results").exists()


def test_ddp_across_nodes_matches_ddp_on_one_node(cluster, shared, tmp_path, mlflow):
    results = {}
    for strategy in ("SPREAD", "STRICT_PACK"):  # two 1-CPU nodes vs the 2-CPU node
        proc = accelab("train", *TRAIN, "train.epochs=3", f"scaling.placement_strategy={strategy}",
                       f"run.name={strategy}", *shared, cluster=cluster, cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        client, run_id = run_of(proc.stdout, mlflow)
        results[strategy] = client.get_run(run_id).data
    spread, packed = results["SPREAD"], results["STRICT_PACK"]
    spread_nodes = spread.tags["accelab.worker_nodes"].split(",")
    assert len(set(spread_nodes)) == 2  # the two ranks ran on different nodes
    assert len(set(packed.tags["accelab.worker_nodes"].split(","))) == 1
    assert cluster.head_node.node_id not in spread_nodes
    assert spread.metrics["test_accuracy"] == packed.metrics["test_accuracy"] >= 0.85
    assert spread.metrics["train_loss"] == pytest.approx(packed.metrics["train_loss"], rel=1e-5)
    assert spread.metrics["ddp_param_max_abs_diff"] == 0.0


def spread_training_past_epoch_0(cluster, shared, tmp_path, mlflow):
    """A 4-epoch training spread over the worker nodes, running, its first epoch logged."""
    proc = accelab("train", *TRAIN, "train.epochs=4", "faults.step_delay_s=0.1",
                   "scaling.placement_strategy=SPREAD", *shared, cluster=cluster, cwd=tmp_path,
                   background=True)  # fmt: skip
    client, run_id = started_run(proc, mlflow=mlflow)
    wait_for_epoch(client, run_id, 0, proc)
    return proc, client, run_id


def test_a_worker_process_killed_mid_epoch_resumes_from_the_checkpoint(
    cluster, shared, tmp_path, mlflow
):
    proc, client, run_id = spread_training_past_epoch_0(cluster, shared, tmp_path, mlflow)
    time.sleep(1.0)  # into epoch 2
    victim = train_workers()[0]
    os.kill(victim.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["accelab.restarts"] == "1"
    assert "resumed from the last checkpoint (restart 1)" in out
    for key in ("val_accuracy", "train_loss", "epoch_s"):
        assert steps(client, run_id, key) == [0, 1, 2, 3]  # exactly one value per epoch


def test_a_worker_node_removed_mid_run_resumes_on_the_other_nodes(
    cluster, shared, tmp_path, mlflow
):
    proc, client, run_id = spread_training_past_epoch_0(cluster, shared, tmp_path, mlflow)
    node_id = train_workers()[0].node_id
    node = next(n for n in cluster.workers if n.node_id == node_id)
    cluster.remove_node(node, allow_graceful=False)
    cluster.workers.remove(node)
    out, _ = proc.communicate(timeout=600)
    cluster.workers.append(cluster.add_node(num_cpus=1))  # the next test gets its capacity back
    assert proc.returncode == 0, out
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and int(run.data.tags["accelab.restarts"]) >= 1
    assert node_id not in run.data.tags["accelab.worker_nodes"]
    assert steps(client, run_id) == [0, 1, 2, 3]


def test_failures_beyond_max_failures_end_the_run_failed_with_the_error(
    cluster, shared, tmp_path, mlflow
):
    proc = accelab("train", *TRAIN, "train.epochs=2", "faults.fail_at_epoch=1", "run.max_failures=0",
                   *shared, cluster=cluster, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    client, run_id = run_of(proc.stdout, mlflow)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert "accelab fault injection: rank 0 fails at epoch 1" in run.data.tags["accelab.error"]
    assert steps(client, run_id) == [0]  # what was done is kept
    assert f"the MLflow run {run_id}" in proc.stderr and "Ray's logs are in" in proc.stderr


def test_tracking_server_outage_loses_no_metric(cluster, shared, tmp_path, mlflow):
    proc = accelab("train", *TRAIN, "train.epochs=5", "faults.step_delay_s=0.15", *shared,
                   cluster=cluster, cwd=tmp_path, background=True)  # fmt: skip
    client, run_id = started_run(proc, mlflow)
    wait_for_epoch(client, run_id, 0, proc)
    mlflow.stop()  # the head's tracking server goes away for a while
    time.sleep(8)
    mlflow.start()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("val_accuracy", "train_loss", "samples_per_s"):
        assert steps(client, run_id, key) == [0, 1, 2, 3, 4]
    assert "model/model.safetensors" in run_artifact_paths(client, run_id, "model")
    assert "recorded afterwards from the checkpoint" in out or "epoch 5/5" in out


def test_sweep_trials_run_on_worker_nodes_and_survive_a_killed_driver(
    cluster, shared, tmp_path, mlflow
):
    cfg = yaml.safe_load((CONFIGS / "digits_sweep.yaml").read_text())
    cfg.update(name="mn-sweep")
    cfg["train"]["epochs"] = 2
    cfg["trainable"]["model_args"]["hidden"] = [128, 128]
    cfg["measure"].update(repeats=10, warmup=3, rounds=2, targets=[{"runtime": "torch"}])
    cfg["sweep"]["variants"] = [{"compression.prune.method": "none"},
                                {"compression.prune.method": "structured", "compression.prune.sparsity": 0.5,
                                 "finetune.epochs": 1}]  # fmt: skip
    cfg["sweep"]["space"] = {"compression.quant.bits": {"grid": [32, 8]}}  # 2 x 2 = 4 trials
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = accelab("sweep", str(path), *shared, cluster=cluster, cwd=tmp_path, background=True)
    for line in first.stdout:
        if "[ 1/4 done" in line:
            break
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    second = accelab("sweep", str(path), *shared, "--resume", cluster=cluster, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    client = MlflowClient(mlflow.uri)
    exp = client.get_experiment_by_name("mn-sweep")
    parents = client.search_runs([exp.experiment_id], "tags.`accelab.kind` = 'sweep'")
    trials = client.search_runs([exp.experiment_id], "tags.`accelab.kind` = 'trial'")
    ids = [t.data.tags["accelab.trial_id"] for t in trials]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(ids) == 4 and len(set(ids)) == 4
    assert all(t.data.tags["accelab.status"] == "ok" for t in trials)
    assert all(t.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for t in trials)
    # the head has no CPUs: every trial that holds CPUs (post-training: it measures in its
    # own process) ran on a worker node. A fine-tuning trial holds none (its TorchTrainer's
    # workers do), so Ray may place its coordinator anywhere, the head included.
    held = [t for t in trials if t.data.params["finetune.epochs"] == "0"]
    assert len(held) == 2
    assert cluster.head_node.node_id not in {t.data.tags["accelab.ray_node"] for t in held}
