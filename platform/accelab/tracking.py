"""MLflow helpers: tracking URI, run creation, params, idempotent per-step metrics.

Runs are written through ``MlflowClient`` with explicit run ids so that the driver, Ray
workers and restarted workers all write to the same run without an "active run" global.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

DEFAULT_DB = "mlflow.db"
TAG_PREFIX = "accelab."


def resolve_tracking_uri(uri: str | None, cwd: str | None = None) -> str:
    """MLflow's default store (``sqlite:///mlflow.db``) made absolute, so Ray workers with
    another working directory write to the same file. Remote URIs pass through."""
    cwd = cwd or os.getcwd()
    if uri is None:
        return f"sqlite:///{Path(cwd, DEFAULT_DB).resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(cwd, uri[len('sqlite:///') :]).resolve()}"
    if "://" not in uri:
        return Path(cwd, uri).resolve().as_uri()
    return uri


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def environment_tags() -> dict[str, str]:
    import ray
    import torch

    from accelab.precision import cpu_model

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "accelab.torch_version": torch.__version__,
        "accelab.ray_version": ray.__version__,
        "accelab.mlflow_version": mlflow.__version__,
        "accelab.python": sys.version.split()[0],
        "accelab.device": device,
        "accelab.cpu_model": cpu_model(),
        "accelab.cpu_count": str(os.cpu_count()),
    }


def get_experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(name)


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
