"""``accelab ui``: the MLflow UI on the configured store, bound to 127.0.0.1, opened on the
latest sweep (in MLflow's model-training view, with accelab's saved columns)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from mlflow.tracking import MlflowClient

from accelab.errors import interruption
from accelab.tracking.client import tracking_store
from accelab.tracking.ui import experiment_url, run_url


def latest_sweep_url(tracking_uri: str, base: str) -> str:
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, "tags.`accelab.kind` = 'sweep'", max_results=1, order_by=["start_time DESC"]
    ) if experiments else []  # fmt: skip
    if not runs:
        return f"{base}/#/experiments?workflowType=machine_learning"
    run = runs[0]
    return (f"{experiment_url(run.info.experiment_id, base)}  (sweep {run.info.run_name}: "
            f"{run_url(run.info.experiment_id, run.info.run_id, base)})")  # fmt: skip


def ui(tracking_uri: str | None, port: int, echo: Callable[[str], None] = print) -> int:
    uri = tracking_store(tracking_uri, "--tracking-uri", must_exist=True)
    if uri.startswith(("http://", "https://")):
        echo(
            f"the tracking server at {uri} has its own UI: {latest_sweep_url(uri, uri.rstrip('/'))}"
        )
        return 0
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
           "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    if uri.startswith("sqlite:///"):  # new experiments' artifacts next to the store, as accelab's
        cmd += [
            "--artifacts-destination",
            str(Path(uri[len("sqlite:///") :]).parent / "mlartifacts"),
        ]
    echo(f"MLflow UI for {uri} on {base} (127.0.0.1 only; Ctrl-C stops it)")
    echo(f"latest sweep: {latest_sweep_url(uri, base)}")
    # Its own process group: the server's workers stop with it, when accelab is stopped
    # by Ctrl-C or by a SIGTERM sent to accelab alone (errors.catch_signals).
    process = subprocess.Popen(cmd, start_new_session=True)
    try:
        return process.wait()
    except KeyboardInterrupt as exc:
        stop_server(process)
        raise interruption(exc).keeping(f"the MLflow UI on {base} stopped", False) from None


def stop_server(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group; SIGKILL what is left after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
