"""MLflow helpers: tracking URI, run creation, params, idempotent per-step metrics.

Runs are written through ``MlflowClient`` with explicit run ids so that the driver, Ray
workers and restarted workers all write to the same run without an "active run" global.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric, Param
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from accelab import started
from accelab.host import cpu_model, device_name
from accelab.tracking import names
from accelab.tracking.store_check import check_tracking_uri
from accelab.tracking.ui import experiment_url

DEFAULT_DB = "mlflow.db"


def resolve_tracking_uri(uri: str | None, cwd: str | None = None) -> str:
    """The configured URI, else ``$MLFLOW_TRACKING_URI``, else MLflow's default store
    (``sqlite:///mlflow.db``), made absolute so that Ray workers with another working
    directory write to the same file. Remote URIs pass through."""
    cwd = cwd or os.getcwd()
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None:
        return f"sqlite:///{Path(cwd, DEFAULT_DB).resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(cwd, uri[len('sqlite:///') :]).resolve()}"
    if "://" not in uri:
        return Path(cwd, uri).resolve().as_uri()
    return uri


def tracking_store(uri: str | None, key: str = "tracking.uri", must_exist: bool = False) -> str:
    """The resolved tracking URI, checked before anything runs (``UsageError`` naming ``key``).
    ``must_exist``: a read-only use, which must find the store and never creates one."""
    return check_tracking_uri(resolve_tracking_uri(uri), key, must_exist)


# mappings whose keys are the user's data (layer names and fnmatch patterns: ``fc*``,
# ``[13]``), not config keys: one param each, their JSON, never a param per key
WHOLE = ("compression.prune.layers", "compression.quant.layers")
PARAM_KEY = re.compile(r"[\w\-. :/]+")  # what MLflow accepts in a param's name


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; a mapping in ``WHOLE``, or one with a key
    MLflow would refuse in a param name, stays one value (its JSON)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            if name in WHOLE or not all(PARAM_KEY.fullmatch(str(k)) for k in value):
                out[name] = json.dumps(value, default=str)
            else:
                out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def environment_tags() -> dict[str, str]:
    # lazy: ``accelab ui``, ``report`` and ``compare`` read runs through this module and never
    # need torch or Ray (measured on a busy 2-core machine: torch ~2 s, ray ~0.7 s to import)
    import ray
    import torch

    return {
        names.TORCH_VERSION: torch.__version__,
        names.RAY_VERSION: ray.__version__,
        names.MLFLOW_VERSION: mlflow.__version__,
        names.PYTHON: sys.version.split()[0],
        names.DEVICE: device_name(),
        names.CPU_MODEL: cpu_model(),
        names.CPU_COUNT: str(os.cpu_count()),
    }


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: next to a sqlite store (``mlartifacts/`` beside
    ``mlflow.db``), not in whatever directory the command ran from; a server decides its own."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    folder = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return (Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts" / folder).as_uri()


def get_experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location(client.tracking_uri, name))


def create_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, str],
    config_yaml: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create a run with flattened params, tags and the resolved config artifact."""
    client = MlflowClient(tracking_uri)
    all_tags = {"mlflow.runName": run_name, **tags}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(get_experiment_id(client, experiment), tags=all_tags, run_name=run_name)
    started.mlflow_runs.append((tracking_uri, run.info.run_id))
    flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
    for i in range(0, len(flat), 100):
        client.log_batch(run.info.run_id, params=flat[i : i + 100])
    if config_yaml is not None:
        log_yaml(client, run.info.run_id, config_yaml, "config.yaml")
    return run.info.run_id


def log_yaml(client: MlflowClient, run_id: str, data: dict[str, Any], name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, name)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        client.log_artifact(run_id, str(path))


def logged_steps(client: MlflowClient, run_id: str, key: str) -> set[int]:
    return {m.step for m in client.get_metric_history(run_id, key)}


def log_metrics_once(
    client: MlflowClient, run_id: str, step: int, metrics: dict[str, float]
) -> bool:
    """Log ``metrics`` at ``step`` unless that step is already recorded (restarts replay
    steps; MLflow must keep exactly one value per step). Returns whether it logged."""
    values = {k: float(v) for k, v in metrics.items() if v is not None}
    if not values or step in logged_steps(client, run_id, sorted(values)[0]):
        return False
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])
    return True


def run_artifact_paths(client: MlflowClient, run_id: str, path: str) -> set[str]:
    """Paths of the files the run itself holds under ``path``. ``client.list_artifacts``
    would also list a logged MLflow Model of that name, and MLflow 3 resolves that model
    against the process's default tracking URI, not ``client``'s: it fails on a server."""
    root = client.get_run(run_id).info.artifact_uri
    repo = get_artifact_repository(root, tracking_uri=client.tracking_uri)
    return {a.path for a in repo.list_artifacts(path)}


ERROR_TAG = names.ERROR


def set_note_error(client: MlflowClient, run_id: str, text: str) -> None:
    """Record why a run failed: a tag, and the run's description in the MLflow UI."""
    client.set_tag(run_id, ERROR_TAG, text[:5000])
    client.set_tag(run_id, "mlflow.note.content", f"**Failed:** `{text[:4000]}`")


def ui_hint(client: MlflowClient, run_id: str) -> str:
    exp = client.get_run(run_id).info.experiment_id
    return (
        f"review in the MLflow UI: accelab ui --tracking-uri {client.tracking_uri}"
        f"  then open {experiment_url(exp)}"
    )


def client_env() -> dict[str, str]:
    """The driver's MLflow client settings (``MLFLOW_*``: server credentials, TLS, S3
    endpoint), handed to Ray workers and trials, which may run on other nodes."""
    return {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}


def apply_client_env(env: dict[str, str]) -> None:
    """Use ``env`` in this (worker) process, with short HTTP retries: a worker must keep
    training while a tracking server is away, not wait minutes per call (the driver
    records what a worker could not, from the checkpoint, when the server is back)."""
    os.environ.update(env)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
