"""What a person sees in the MLflow UI (3.x): the model-training view (not the GenAI
overview), a saved view whose columns show speed next to quality, and a sweep's parent run
whose description carries the table, the recommendation and the plot."""

from __future__ import annotations

import json
import time

from mlflow.tracking import MlflowClient

from accelab.tracking import names

VIEW_KEY = "accelab"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
NOTE_TAG = "mlflow.note.content"
DEFAULT_UI = "http://127.0.0.1:5000"


def view_state(metric: str) -> dict:
    """Runs newest first (so that trials stay nested under their sweep), with the columns a
    reviewer compares: speed, quality drop (test and validation), size, backend."""
    shown = (names.M_SPEEDUP, names.drop(metric), names.drop(names.on_val(metric)), metric,
             names.M_LATENCY_P50_MS, names.M_SIZE_RATIO)  # fmt: skip
    columns = [f"metrics.`{m}`" for m in shown]
    return {
        "searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False,
        "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs",
        "datasetsFilter": [], "runsHiddenMode": "SHOW_ALL",
        "selectedColumns": [*columns, "tags.`accelab.backend`"],
    }  # fmt: skip


def ensure_view(client: MlflowClient, experiment_id: str, metric: str) -> None:
    """Save the view as an experiment tag (MLflow's shared view state) and mark the
    experiment as model development."""
    now = int(time.time() * 1000)
    state = {"name": "accelab: speed vs quality", "createdAt": now, "updatedAt": now,
             "state": json.dumps(view_state(metric))}  # fmt: skip
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(state))
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")


def experiment_url(experiment_id: str, base: str = DEFAULT_UI) -> str:
    return (f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={VIEW_KEY}")  # fmt: skip


def run_url(experiment_id: str, run_id: str, base: str = DEFAULT_UI) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
