"""Driver side of training: resources check, MLflow run, TorchTrainer, progress, result."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from accelab import started
from accelab.config.schema import ExperimentConfig
from accelab.errors import collect, interruption
from accelab.tasks import build_model, resolve_task
from accelab.tracking import names
from accelab.tracking.client import client_env, log_metrics_once, tracking_store
from accelab.tracking.runs import (
    create_while,
    find_resumable,
    mark_failed,
    new_ray_name,
    reopen,
    start_mlflow_run,
    storage_path,
)
from accelab.tracking.store_check import check_shared_stores
from accelab.training import resources
from accelab.training.checkpoint import MODEL_FILE, load_model_state
from accelab.training.ingest import trainer_data
from accelab.training.loop import LoopHooks, LoopSettings, train_loop_per_worker
from accelab.training.progress import EpochProgress
from accelab.training.ray_session import init_ray, will_start_local_ray
from accelab.training.resources import bundle
from accelab.training.sync import sync_checkpoint, transient, with_retry


@dataclass
class TrainOutcome:
    mlflow_run_id: str
    ray_run_name: str
    metrics: dict[str, Any]
    checkpoint_path: str | None
    storage_path: str


def _entry(config: dict[str, Any]) -> None:
    train_loop_per_worker(config["settings"])


def build_trainer(
    cfg: ExperimentConfig, settings: LoopSettings, ray_name: str, callbacks: list | None = None
):
    # a Ray Data task's splits go to the trainer (which shards the train split); the
    # workers learn its size from the settings
    data = trainer_data(resolve_task(cfg.trainable.name), cfg.trainable.data_seed)
    settings = dataclasses.replace(settings, train_rows=data.train_rows)
    trainer = TorchTrainer(
        _entry,
        train_loop_config={"settings": settings},
        datasets=data.datasets or None,
        dataset_config=data.dataset_config,
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker=bundle(cfg),
            placement_strategy=cfg.scaling.placement_strategy,
        ),
        run_config=RunConfig(
            name=ray_name,
            storage_path=storage_path(cfg),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.checkpoints_to_keep),
            callbacks=callbacks,
        ),
    )
    # Ray Train's own Ctrl-C handler (main thread only) aborts the run and exits 0 or 1
    # with no word; accelab's (errors.catch_signals) marks the run KILLED and says how to
    # --resume, for SIGINT and SIGTERM alike.
    trainer._register_sigint_handler = lambda controller: None
    return trainer


def joined(cfg: ExperimentConfig, tracking_uri: str, echo: Callable[[str], None]) -> None:
    """Checks once Ray is up: the request fits the cluster (or its autoscaler), and on
    several nodes the tracking store and results storage are ones every node reaches."""
    nodes = len(resources.cluster_nodes())
    collect(
        lambda: resources.check_cluster(cfg, echo),
        lambda: check_shared_stores(cfg, tracking_uri, storage_path(cfg), nodes),
    )


def run_training(
    cfg: ExperimentConfig,
    *,
    resume: bool | str = False,
    hooks: LoopHooks | None = None,
    echo: Callable[[str], None] = print,
    parent_run_id: str | None = None,
    display_name: str | None = None,
) -> TrainOutcome:
    """Train ``cfg`` data-parallel with Ray Train; one MLflow run per training.

    ``resume=True`` continues the newest run of ``cfg.run_name`` (``resume="<ray run>"``
    a named one) from its last checkpoint, in the same MLflow run.
    """
    tracking_uri, _ = collect(
        lambda: tracking_store(cfg.tracking.uri, cfg.labelled("tracking.uri")),
        lambda: resources.check_before_ray(cfg),
    )
    if resume:
        run_id, ray_name = find_resumable(
            tracking_uri, cfg, resume if isinstance(resume, str) else None
        )
        echo(f"resuming Ray run {ray_name} (MLflow run {run_id})")
        reopen(tracking_uri, run_id)
    if resume:
        init_ray(cfg)
        joined(cfg, tracking_uri, echo)
    else:
        ray_name = new_ray_name(cfg)

        def create() -> str:
            return start_mlflow_run(
                cfg, tracking_uri, ray_name, "train", parent_run_id, display_name=display_name
            )

        def start_ray() -> None:
            init_ray(cfg)
            joined(cfg, tracking_uri, echo)

        if will_start_local_ray(cfg):  # everything was checked before Ray: overlap the two
            run_id = create_while(create, start_ray, tracking_uri)
        else:  # on a cluster the cluster is checked first, then anything is recorded
            start_ray()
            run_id = create()
    settings = LoopSettings(
        config=cfg.model_dump(mode="json"),
        tracking_uri=tracking_uri,
        mlflow_run_id=run_id,
        hooks=hooks or LoopHooks(),
        epochs=cfg.train.epochs,
        lr=cfg.train.lr,
        schedule=cfg.train.schedule,
        mlflow_env=client_env(),
    )
    echo(
        f"training {cfg.trainable.name}/{cfg.trainable.model} on {cfg.scaling.num_workers} worker(s), "
        f"precision={cfg.train.precision}, {cfg.train.epochs} epochs -> MLflow run {run_id}"
    )
    trainer = build_trainer(cfg, settings, ray_name)
    fit_start = time.time()
    try:
        metric = resolve_task(cfg.trainable.name).metric.name
        with EpochProgress(tracking_uri, run_id, cfg.train.epochs, echo, metric=metric):
            result = trainer.fit()
    except BaseException as exc:
        stop = interruption(exc)
        with contextlib.suppress(Exception):  # never hide the training error behind MLflow's
            mark_failed(tracking_uri, run_id, stop or exc)
        if stop:
            raise stop.keeping(
                f"MLflow run {run_id} (KILLED) and the checkpoints of Ray run {ray_name} under "
                f"{storage_path(cfg)} are kept"
            ) from None
        raise
    timeline = {"overhead_before_fit_s": fit_start - started.t0, "fit_s": time.time() - fit_start}
    record_finished(result, tracking_uri, run_id, echo, timeline, cfg)
    return TrainOutcome(
        mlflow_run_id=run_id,
        ray_run_name=ray_name,
        metrics=dict(result.metrics or {}),
        checkpoint_path=result.checkpoint.path if result.checkpoint else None,
        storage_path=storage_path(cfg),
    )


def log_trained_model(cfg: ExperimentConfig, ckpt: Path, tracking_uri: str, run_id: str) -> None:
    """The trained model as the run's MLflow Model (ONNX, fp32), once."""
    # imported here: the ONNX exporter and MLflow Model writer cost ~1.3 s of imports,
    # paid only once a training has finished
    from accelab.export.onnx import to_onnx
    from accelab.tracking.models import log_onnx_model

    client = MlflowClient(tracking_uri)
    exp = client.get_run(run_id).info.experiment_id
    if client.search_logged_models([exp], filter_string=f"source_run_id = '{run_id}'"):
        return  # a resumed or retried run keeps the one it has
    task = resolve_task(cfg.trainable.name)
    model = build_model(cfg.trainable)
    model.load_state_dict(load_model_state(ckpt / MODEL_FILE))
    data = to_onnx(model.eval(), task.example_input(2), cfg.measure.onnx_exporter)
    log_onnx_model(tracking_uri, run_id, data, task, model, {names.BACKEND: "ort-fp32",
                                                             names.KIND: "train"})  # fmt: skip


def record_finished(
    result, tracking_uri: str, run_id: str, echo: Callable[[str], None], timeline: dict,
    cfg: ExperimentConfig,
) -> None:  # fmt: skip
    """Complete the MLflow record from the final checkpoint (what workers could not write
    while the tracking server was away), then mark the run FINISHED."""
    client = MlflowClient(tracking_uri)
    grace = float(os.environ.get("ACCELAB_MLFLOW_GRACE_S", "60"))
    try:
        with result.checkpoint.as_directory() as ckpt:
            synced = with_retry(lambda: sync_checkpoint(Path(ckpt), tracking_uri), grace)
            try:
                with_retry(lambda: log_trained_model(cfg, Path(ckpt), tracking_uri, run_id), grace)
            except Exception as exc:  # the export, not the store: say so, record the rest
                if transient(exc):
                    raise
                echo(f"warning: the trained model was not logged as an MLflow Model "
                     f"({type(exc).__name__}: {exc}); its weights are in the run's model/")  # fmt: skip
        # where the wall time went, next to the loop's own epoch_s (see benchmarks/overhead.py)
        with_retry(lambda: log_metrics_once(client, run_id, 0, timeline), grace)
        with_retry(lambda: client.set_terminated(run_id, "FINISHED"), grace)
        tags = with_retry(lambda: client.get_run(run_id).data.tags, grace)
    except Exception as exc:
        why = "is unreachable" if transient(exc) else f"failed: {exc}"
        echo(
            f"warning: MLflow at {tracking_uri} {why} ({type(exc).__name__}); training "
            f"finished but its record is incomplete. Then: accelab sync {result.checkpoint.path}"
        )
        return
    if synced.written_steps:
        echo(
            f"note: the tracking server was unreachable during training; epochs "
            f"{[s + 1 for s in synced.written_steps]} were recorded afterwards from the checkpoint"
        )
    echo(f"precision: {tags.get('accelab.precision')} ({tags.get('accelab.precision_reason')})")
