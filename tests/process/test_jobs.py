"""``ray job submit`` against a real ``ray start --head`` cluster with token auth on, where
accelab is NOT installed on the cluster side, submitted from another directory: a
training, a compress and a sweep run as the README documents."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.services import REPO, free_port, kill_marked, wait_http, without_accelab

RUNTIME_ENV = '{"env_vars": {"PYTHONPATH": "platform"}}'  # the README's submit command


@dataclass
class Head:
    address: str  # the dashboard (Jobs API)
    env: dict[str, str]  # a client that holds the cluster's token
    home: Path

    def submit(self, *entrypoint: str, cwd: Path, runtime_env: bool = True, timeout: int = 600):
        """``ray job submit`` (waits, streams logs); returns (process, seconds to each line)."""
        cmd = ["ray", "job", "submit", "--address", self.address]
        if runtime_env:
            cmd += ["--working-dir", str(REPO), "--runtime-env-json", RUNTIME_ENV]
        start, lines = time.monotonic(), []
        proc = subprocess.Popen([*cmd, "--", *entrypoint], cwd=cwd, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        for line in proc.stdout:
            lines.append((time.monotonic() - start, line.rstrip()))
        proc.wait(timeout=timeout)
        return proc.returncode, lines


@pytest.fixture(scope="module")
def head() -> Head:
    root = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))  # short: Ray's socket paths
    temp = root / "t"
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env = {**base, "HOME": str(root / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(
        ["ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True
    )
    gcs, dashboard = free_port(), free_port()
    cluster_env = {**env, "RAY_AUTH_MODE": "token", **without_accelab(root / "hide")}
    started = subprocess.run(
        ["ray", "start", "--head", "--num-cpus", "2", "--port", str(gcs), "--dashboard-host",
         "127.0.0.1", "--dashboard-port", str(dashboard), "--ray-client-server-port",
         str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
         "--temp-dir", str(temp), "--disable-usage-stats"],
        env=cluster_env, capture_output=True, text=True,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        address = f"http://127.0.0.1:{dashboard}"
        wait_http(
            f"{address}/api/authentication_mode", 60
        )  # public; everything else needs the token
        yield Head(address, {**env, "RAY_AUTH_MODE": "token"}, root / "home")
    finally:
        kill_marked(str(temp))


def test_jobs_api_refuses_a_client_without_the_token(head: Head, tmp_path: Path):
    stranger = {**head.env, "HOME": str(tmp_path)}  # no ~/.ray/auth_token
    stranger.pop("RAY_AUTH_MODE")
    proc = subprocess.run(["ray", "job", "submit", "--address", head.address, "--", "echo", "hi"],
                          env=stranger, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "token" in (proc.stdout + proc.stderr).lower()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{head.address}/api/jobs/", timeout=60)
    assert err.value.code == 401
    token = (head.home / ".ray" / "auth_token").read_text().strip()
    request = urllib.request.Request(f"{head.address}/api/jobs/",
                                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert urllib.request.urlopen(request, timeout=60).status == 200


def test_accelab_is_not_installed_on_the_cluster_side(head: Head, tmp_path: Path):
    code, lines = head.submit("python", "-c", "import accelab", cwd=tmp_path, runtime_env=False)
    assert code != 0
    assert any("No module named 'accelab'" in line for _, line in lines)


def test_train_compress_and_sweep_run_as_ray_jobs(head: Head, tmp_path: Path):
    client_dir = tmp_path / "elsewhere"  # the client is not in the repository
    client_dir.mkdir()
    db = tmp_path / "mlflow.db"
    store = [f"tracking.uri=sqlite:///{db}", f"run.storage_path={tmp_path / 'results'}",
             "measure.targets=[{runtime: torch}]"]  # fmt: skip

    code, lines = head.submit("python", "-m", "accelab", "train", "configs/digits.yaml",
                              "train.epochs=2", *store, cwd=client_dir)  # fmt: skip
    text = "\n".join(line for _, line in lines)
    assert code == 0, text[-3000:]
    first_epoch = next(t for t, line in lines if line.startswith("epoch 1/2"))
    print(
        f"\nray job submit -> first epoch line: {first_epoch:.1f} s; whole job {lines[-1][0]:.1f} s"
    )
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", text).group(1)
    client = MlflowClient(f"sqlite:///{db}")
    train = client.get_run(run_id)
    assert train.info.status == "FINISHED" and train.data.metrics["test_accuracy"] > 0.8

    code, lines = head.submit("python", "-m", "accelab", "compress", "configs/digits.yaml",
                              "--from", f"runs:/{run_id}", "compression.quant.bits=8", *store,
                              cwd=client_dir)  # fmt: skip
    text = "\n".join(line for _, line in lines)
    assert code == 0 and "torch-int8-x86" in text, text[-3000:]

    code, lines = head.submit(
        "python", "-m", "accelab", "sweep", "configs/digits_sweep.yaml", "trainable.model=cnn",
        "trainable.model_args={}", f"sweep.baseline_from=runs:/{run_id}", "name=digits",
        "sweep.variants=[{compression.prune.method: none}]",
        "sweep.space={compression.quant.bits: {grid: [32, 8]}}", "measure.rounds=2", *store,
        cwd=client_dir,
    )  # fmt: skip
    text = "\n".join(line for _, line in lines)
    assert code == 0 and "[ 2/2 done, 0 running]" in text, text[-3000:]
    trials = client.search_runs([train.info.experiment_id], "tags.`accelab.kind` = 'trial'")
    assert len(trials) == 2 and all(t.data.tags["accelab.status"] == "ok" for t in trials)
