"""Record in MLflow what a training wrote into its checkpoint but MLflow never got.

The checkpoint's ``meta.json`` holds every epoch's metrics and the run it belongs to, so
the record can always be completed from it: by the driver right after training (workers
could not reach the tracking server for a while), or later by ``accelab sync`` when the
server was down until the end. Writing is idempotent: a step already in MLflow is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from requests.exceptions import RequestException  # MLflow's HTTP client

from accelab.errors import UsageError
from accelab.tracking.client import log_metrics_once, run_artifact_paths
from accelab.training.checkpoint import MODEL_FILE, read_meta


@dataclass
class SyncResult:
    run_id: str
    tracking_uri: str
    written_steps: list[int]
    model_uploaded: bool


def sync_checkpoint(directory: Path, tracking_uri: str | None = None) -> SyncResult:
    """Log the checkpoint's missing epochs (and model file) into its MLflow run."""
    meta = read_meta(directory)
    record = meta.get("mlflow") or {}
    uri, run_id = tracking_uri or record.get("tracking_uri"), record.get("run_id")
    if not uri or not run_id:
        raise UsageError(f"{directory}: this checkpoint names no MLflow run to sync into")
    client = MlflowClient(uri)
    written = [row["epoch"] for row in meta.get("history", [])
               if log_metrics_once(client, run_id, row["epoch"], row["metrics"])]  # fmt: skip
    uploaded = False
    if meta.get("epoch") == meta.get("epochs", 0) - 1:  # the final weights: the run's model
        names = run_artifact_paths(client, run_id, "model")
        if f"model/{MODEL_FILE}" not in names:
            client.log_artifact(run_id, str(Path(directory) / MODEL_FILE), "model")
            uploaded = True
    return SyncResult(run_id, uri, written, uploaded)


TRANSIENT_SIGNS = ("API request to", "Max retries exceeded", "Connection refused",
                   "timed out", "database is locked", "503", "502")  # fmt: skip


def transient(exc: BaseException) -> bool:
    """Whether a retry may cure ``exc``: the tracking server unreachable, slow or busy
    (MLflow wraps connection errors in an MlflowException naming the API request)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, RequestException) or any(s in str(exc) for s in TRANSIENT_SIGNS)


def with_retry(action: Callable[[], object], grace_s: float, every_s: float = 2.0):
    """``action()``, retried while it fails with a transient error and ``grace_s`` has not
    passed; any other error is raised at once (a bug is not an outage)."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            return action()
        except Exception as exc:
            if not transient(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(every_s)
