"""Real signals to real ``accelab`` processes, table-driven: an interrupted command exits
130 (SIGINT) or 143 (SIGTERM), says in one line what it kept and how to ``--resume``,
leaves its MLflow runs KILLED (the parent and every child) and registers nothing; the
interrupted sweep then resumes to the end in the same parent run.

Each command runs in its own process group: ``group=True`` signals the whole group, as
Ctrl-C in a terminal does (Ray's workers get it too); ``group=False`` the driver alone,
as ``kill <pid>`` does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import CONFIGS
from tests.process.test_sweep import dense_checkpoint, sweep_yaml  # noqa: F401  (fixture)

FINETUNING = [
    {"compression.prune.method": "none"},
    {
        "compression.prune.method": "structured",
        "compression.prune.sparsity": 0.5,
        "finetune.epochs": 15,
    },
]  # fmt: skip  (the second trial fine-tunes long enough to be interrupted in it)


@dataclass
class Case:
    command: str  # sweep | train
    signum: int
    group: bool  # the whole process group (Ctrl-C) or the driver alone
    resume: bool = False  # then resume it and check that it finishes in the same runs
    in_finetuning: bool = True  # a sweep: signalled in the fine-tuning trial, or in the first
    before_tune: bool = False  # a sweep: signalled once its parent run exists, before Tune


CASES = {
    "sweep_ctrl_c_in_finetuning_then_resume": Case("sweep", signal.SIGINT, True, resume=True),
    "sweep_sigint_to_the_driver_alone_in_its_first_trial": Case(
        "sweep", signal.SIGINT, False, in_finetuning=False
    ),
    "train_sigterm": Case("train", signal.SIGTERM, False),
    "sweep_ctrl_c_before_tune_saved_its_state_then_resume": Case(
        "sweep", signal.SIGINT, True, resume=True, before_tune=True
    ),
}


def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "accelab", *args], cwd=cwd, stdout=fh,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def wait_for(ready, proc: subprocess.Popen, log: Path, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.3)
    pytest.fail(f"never ready (exit {proc.poll()}):\n{log.read_text()[-3000:]}")


def trial_started(client: MlflowClient, experiment: str, in_finetuning: bool):
    """True once a trial child run exists (and, ``in_finetuning``, has logged an epoch)."""

    def ready() -> bool:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return False
        trials = client.search_runs([exp.experiment_id], "tags.`accelab.kind` = 'trial'")
        if not in_finetuning:
            return bool(trials)
        return any(k.startswith("finetune_") for t in trials for k in t.data.metrics)

    return ready


def runs_of(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "", max_results=1000)


def registered_versions(client: MlflowClient) -> list:
    return [v for m in client.search_registered_models() for v in
            client.search_model_versions(f"name = '{m.name}'")]  # fmt: skip


@pytest.mark.ray
@pytest.mark.parametrize("name", list(CASES))
def test_interrupted_command_is_killed_in_mlflow_ships_nothing_and_resumes(
    name,
    tmp_path,
    store,
    dense_checkpoint,  # noqa: F811  (the imported fixture)
):
    case = CASES[name]
    log = tmp_path / "first.log"
    client = MlflowClient(store["tracking_uri"])
    if case.command == "sweep":
        experiment = name.replace("_", "-")
        config = sweep_yaml(tmp_path, experiment, FINETUNING)
        args = ["sweep", str(config), *store["overrides"], f"sweep.baseline_from={dense_checkpoint}",
                "measure.rounds=2", "measure.repeats=10", "scaling.num_workers=1"]  # fmt: skip
        ready = trial_started(client, experiment, case.in_finetuning)
        if case.before_tune:  # the parent run exists; Tune has not started (nor saved)
            # an A/A control that samples for 10 s holds the sweep before Tune, so the signal
            # sent once the parent run exists lands there (a quick one let Tune start first)
            args += ["measure.target_precision=0.000001", "measure.max_seconds=10"]

            def ready() -> bool:
                return "-> MLflow parent run" in log.read_text()
    else:
        experiment = "digits"
        config = CONFIGS / "digits.yaml"
        args = ["train", str(config), *store["overrides"], "train.epochs=40",
                "scaling.num_workers=1", "train.precision=fp32"]  # fmt: skip

        def ready() -> bool:  # an epoch is checkpointed: there is something to resume
            return "epoch 2/" in log.read_text()

    proc = start(args, tmp_path, log)
    wait_for(ready, proc, log)
    os.killpg(proc.pid, case.signum) if case.group else proc.send_signal(case.signum)
    code = proc.wait(timeout=120)
    out = log.read_text()
    assert code == 128 + case.signum, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("accelab: interrupted")]
    assert len(lines) == 1, out[-3000:]
    assert "--resume" in lines[0] and str(config) in lines[0], lines[0]
    assert "Traceback" not in out, out[-3000:]
    runs = runs_of(client, experiment)
    statuses = {r.info.run_name: r.info.status for r in runs}
    assert registered_versions(client) == []
    if case.command == "sweep":  # finished trials stay FINISHED, everything else KILLED
        parent = next(r for r in runs if r.data.tags["accelab.kind"] == "sweep")
        trials = [r for r in runs if r.data.tags["accelab.kind"] == "trial"]
        done = sorted(
            t.data.tags["accelab.trial_id"] for t in trials if t.info.status == "FINISHED"
        )
        if case.before_tune:
            assert statuses == {parent.info.run_name: "KILLED"}, statuses
        elif case.in_finetuning:  # the first trial finished before; the second was stopped
            assert statuses == {parent.info.run_name: "KILLED", "dense": "FINISHED",
                                "structured-0.5-ft15": "KILLED"}, statuses  # fmt: skip
        assert parent.info.status == "KILLED" and set(statuses.values()) <= {"KILLED", "FINISHED"}
        for t in trials:
            if t.info.status == "KILLED":
                assert t.data.tags["accelab.status"] == "interrupted"
        listed = f" ({', '.join(done)})" if done else ""
        assert (f"{len(done)} of 2 trial(s) finished{listed}, kept in MLflow run "
                f"{parent.info.run_id}") in lines[0]  # fmt: skip
        assert "nothing was registered" in lines[0]
        assert "accelab.recommendation" not in parent.data.tags
    else:
        assert list(statuses.values()) == ["KILLED"], statuses
        assert f"MLflow run {runs[0].info.run_id} (KILLED)" in lines[0]
    if not case.resume:
        return
    # the same sweep resumes, in the same parent run, and ends
    resumed = subprocess.run(
        [sys.executable, "-m", "accelab", *args, "--resume"], cwd=tmp_path,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"MLflow parent run {parent.info.run_id}" in resumed.stdout
    restarted = "Ray Tune saved no state" in resumed.stdout  # and says so, in one line
    assert restarted == case.before_tune, resumed.stdout[-2000:]
    after = runs_of(client, experiment)
    sweeps = [r for r in after if r.data.tags["accelab.kind"] == "sweep"]
    trials = [r for r in after if r.data.tags["accelab.kind"] == "trial"]
    assert [s.info.run_id for s in sweeps] == [parent.info.run_id]
    assert sweeps[0].info.status == "FINISHED" and "accelab.error" not in sweeps[0].data.tags
    assert len(trials) == 2 and {t.info.status for t in trials} == {"FINISHED"}
    assert "accelab.recommendation" in sweeps[0].data.tags  # the finish step ran, once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.ray
@pytest.mark.parametrize("signum", [signal.SIGTERM])  # SIGINT takes the same path
def test_ui_stops_its_mlflow_server_when_stopped(signum, tmp_path):
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(db).search_experiments()  # the store exists
    port = free_port()
    log = tmp_path / "ui.log"
    proc = start(["ui", "--tracking-uri", db, "--port", str(port)], tmp_path, log)
    wait_for(lambda: serving(port), proc, log, seconds=120)
    proc.send_signal(signum)  # accelab alone, as `kill <pid>` (its server has its own group)
    code = proc.wait(timeout=60)
    assert code == 128 + signum, log.read_text()
    deadline = time.time() + 60  # an orphaned server serves forever; a loaded one stops late
    while serving(port) and time.time() < deadline:
        time.sleep(0.2)
    assert not serving(port), "the mlflow server still serves after accelab ui stopped"
