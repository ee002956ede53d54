"""Run bookkeeping shared by the commands: where results go, how an MLflow run is created
and tagged, and how an interrupted run is found again for ``--resume``.

Tags written on every run:
    accelab.kind       train | compress | sweep | trial
    accelab.ray_run    the Ray Train / Tune run name (its directory under storage_path)
    accelab.run_base   the config's run name (what --resume looks for)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.errors import UsageError
from accelab.tasks import resolve_task
from accelab.tracking import names
from accelab.tracking.client import (
    ERROR_TAG,
    create_run,
    environment_tags,
    set_note_error,
)
from accelab.tracking.ui import VIEW_TAG, ensure_view

KIND_TAG = names.KIND
RAY_RUN_TAG = names.RAY_RUN
BASE_TAG = names.RUN_BASE
STATUS_TAG = names.STATUS  # a trial's outcome (``variant.record`` writes it)


def storage_path(cfg: ExperimentConfig) -> str:
    """``run.storage_path`` made absolute (trials and workers run in other directories);
    URIs (s3://, gs://, ...) pass through."""
    path = cfg.run.storage_path
    return path if "://" in path else str(Path(path).expanduser().resolve())


def new_ray_name(cfg: ExperimentConfig, kind: str = "") -> str:
    """A fresh, sortable Ray run name: ``<run name>[-<kind>]-YYYYmmdd-HHMMSS``."""
    middle = f"-{kind}" if kind else ""
    return f"{cfg.run_name}{middle}-{time.strftime('%Y%m%d-%H%M%S')}"


def find_resumable(
    tracking_uri: str, cfg: ExperimentConfig, name: str | None, kind: str = "train"
) -> tuple[str, str]:
    """(MLflow run id, Ray run name) of the ``kind`` run to resume: ``name`` or the newest
    unfinished one of this config."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(cfg.mlflow_experiment)
    query = f"tags.`{KIND_TAG}` = '{kind}' and attributes.status != 'FINISHED' and " + (
        f"tags.`{RAY_RUN_TAG}` = '{name}'" if name else f"tags.`{BASE_TAG}` = '{cfg.run_name}'"
    )
    runs = (
        client.search_runs([exp.experiment_id], query, max_results=1, order_by=["start_time DESC"])
        if exp
        else []
    )
    if not runs:
        what = f"run {name!r}" if name else f"a run of {cfg.run_name!r}"
        raise UsageError(
            f"--resume: no unfinished MLflow record of {what} in experiment {cfg.mlflow_experiment!r}"
        )
    return runs[0].info.run_id, runs[0].data.tags[RAY_RUN_TAG]


def start_mlflow_run(
    cfg: ExperimentConfig,
    tracking_uri: str,
    ray_name: str,
    kind: str,
    parent: str | None = None,
    tags: dict[str, str] | None = None,
    display_name: str | None = None,
) -> str:
    """Create the run with every identifying tag at once (a crash leaves no untagged run).
    ``display_name`` is what the MLflow UI lists (default: the Ray run name)."""
    tags = {
        KIND_TAG: kind,
        RAY_RUN_TAG: ray_name,
        BASE_TAG: cfg.run_name,
        **environment_tags(),
        **(tags or {}),
    }
    dump = cfg.model_dump(mode="json")
    run_id = create_run(
        tracking_uri, cfg.mlflow_experiment, display_name or ray_name, dump, tags, dump, parent
    )
    if parent is None:  # once per experiment: the saved view a reviewer opens
        prepare_view(tracking_uri, run_id, cfg)
    return run_id


def prepare_view(tracking_uri: str, run_id: str, cfg: ExperimentConfig) -> None:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment(client.get_run(run_id).info.experiment_id)
    if VIEW_TAG not in exp.tags:
        ensure_view(client, exp.experiment_id, resolve_task(cfg.trainable.name).metric.name)


def mark_failed(tracking_uri: str, run_id: str, exc: BaseException) -> None:
    """End ``run_id`` as FAILED (KILLED on Ctrl-C) with the error text on the run."""
    client = MlflowClient(tracking_uri)
    interrupted = isinstance(exc, KeyboardInterrupt)
    text = "interrupted" if interrupted else f"{type(exc).__name__}: {exc}"
    set_note_error(client, run_id, text)
    client.set_terminated(run_id, "KILLED" if interrupted else "FAILED")


def reopen(tracking_uri: str, run_id: str) -> None:
    """A resumed run is RUNNING again, without the note of how it ended before."""
    client = MlflowClient(tracking_uri)
    client.update_run(run_id, status="RUNNING")
    if ERROR_TAG in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, ERROR_TAG)


def end_unfinished(tracking_uri: str, root_id: str, exc: BaseException) -> list:
    """End ``root_id`` and every run below it still RUNNING (a sweep's baseline training,
    its trials, their fine-tuning): KILLED when interrupted, else the root FAILED with the
    error and what it left running KILLED. Call once Ray is stopped, so that no trial
    writes after this. The children that were RUNNING, as MLflow runs."""
    client = MlflowClient(tracking_uri)
    exp = client.get_run(root_id).info.experiment_id
    todo, stopped = [root_id], []
    while todo:
        query = f"tags.`mlflow.parentRunId` = '{todo.pop()}'"
        for child in client.search_runs([exp], query, max_results=5000):
            todo.append(child.info.run_id)
            if child.info.status == "RUNNING":
                if child.data.tags.get(STATUS_TAG) == "running":
                    client.set_tag(child.info.run_id, STATUS_TAG, "interrupted")
                client.set_terminated(child.info.run_id, "KILLED")
                stopped.append(child)
    mark_failed(tracking_uri, root_id, exc)
    return stopped


def variant_name(cfg: ExperimentConfig) -> str:
    """A short name that says what a compression variant is, e.g. ``structured-0.5+int8-ft2``
    (MLflow's run lists cut names at ~35 characters)."""
    p, q, epochs = cfg.compression.prune, cfg.compression.quant, cfg.finetune.epochs
    name = "dense" if p.method == "none" else f"{p.method}-{p.sparsity:g}"
    if p.method in ("unstructured", "structured") and p.layers:
        name += "-layers"  # a per-layer recipe: compression.prune.layers says which
    if p.method == "unstructured" and p.schedule == "cubic":
        name += "-cubic"
    if q.bits < 32:
        name += f"+{q.label}" + ("-qat" if q.mode == "qat" else "")
    if epochs:
        name += f"-ft{epochs}"
    return name


def create_while(create: Callable[[], str], work: Callable[[], None], tracking_uri: str) -> str:
    """``create()`` (an MLflow run: ~3 s on a fresh store) in a thread while ``work()``
    (starting Ray: ~4 s) runs here; the run id. If ``work`` fails, the run ends FAILED."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(create)
        try:
            work()
        except BaseException as exc:
            mark_failed(tracking_uri, future.result(), exc)
            raise
        return future.result()
