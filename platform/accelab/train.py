"""Driver side of training: resources check, MLflow run, TorchTrainer, progress, result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelab.config.schema import ExperimentConfig
from accelab.errors import UsageError
from accelab.train_loop import LoopHooks, LoopSettings, train_loop_per_worker

KIND_TAG = "accelab.kind"
RAY_RUN_TAG = "accelab.ray_run"
BASE_TAG = "accelab.run_base"


@dataclass
class TrainOutcome:
    mlflow_run_id: str
    ray_run_name: str
    metrics: dict[str, Any]
    checkpoint_path: str | None
    storage_path: str


def storage_path(cfg: ExperimentConfig) -> str:
    path = cfg.run.storage_path
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _entry(config: dict[str, Any]) -> None:
    train_loop_per_worker(config["settings"])


def find_resumable(
    tracking_uri: str, cfg: ExperimentConfig, name: str | None, kind: str = "train"
) -> tuple[str, str]:
    """(mlflow run id, Ray run name) of the ``kind`` run to resume: ``name`` or the newest."""
    from mlflow.tracking import MlflowClient

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
) -> str:
    """Create the run with every identifying tag at once (a crash leaves no untagged run)."""
    from accelab.tracking import create_run, environment_tags

    tags = {
        KIND_TAG: kind,
        RAY_RUN_TAG: ray_name,
        BASE_TAG: cfg.run_name,
        **environment_tags(),
        **(tags or {}),
    }
    dump = cfg.model_dump(mode="json")
    return create_run(tracking_uri, cfg.mlflow_experiment, ray_name, dump, tags, dump, parent)


def build_trainer(
    cfg: ExperimentConfig, settings: LoopSettings, ray_name: str, callbacks: list | None = None
):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from accelab.resources import bundle

    return TorchTrainer(
        _entry,
        train_loop_config={"settings": settings},
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


def run_training(
    cfg: ExperimentConfig,
    *,
    resume: bool | str = False,
    hooks: LoopHooks | None = None,
    echo: Callable[[str], None] = print,
    parent_run_id: str | None = None,
) -> TrainOutcome:
    """Train ``cfg`` data-parallel with Ray Train; one MLflow run per training.

    ``resume=True`` continues the newest run of ``cfg.run_name`` (``resume="<ray run>"``
    a named one) from its last checkpoint, in the same MLflow run.
    """
    from mlflow.tracking import MlflowClient

    from accelab import resources
    from accelab.progress import EpochProgress
    from accelab.ray_session import init_ray, will_start_local_ray
    from accelab.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(cfg.tracking.uri)
    if will_start_local_ray():
        resources.check_placement(cfg, resources.local_nodes(), "this machine")
    if resume:
        run_id, ray_name = find_resumable(
            tracking_uri, cfg, resume if isinstance(resume, str) else None
        )
        echo(f"resuming Ray run {ray_name} (MLflow run {run_id})")
    init_ray()
    resources.check_placement(cfg, resources.cluster_nodes(), "the Ray cluster")
    if not resume:
        ray_name = f"{cfg.run_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_id = start_mlflow_run(cfg, tracking_uri, ray_name, "train", parent_run_id)
    settings = LoopSettings(
        config=cfg.model_dump(mode="json"),
        tracking_uri=tracking_uri,
        mlflow_run_id=run_id,
        hooks=hooks or LoopHooks(),
        epochs=cfg.train.epochs,
        lr=cfg.train.lr,
    )
    echo(
        f"training {cfg.trainable.name}/{cfg.trainable.model} on {cfg.scaling.num_workers} worker(s), "
        f"precision={cfg.train.precision}, {cfg.train.epochs} epochs -> MLflow run {run_id}"
    )
    client = MlflowClient(tracking_uri)
    trainer = build_trainer(cfg, settings, ray_name)
    try:
        with EpochProgress(tracking_uri, run_id, cfg.train.epochs, echo):
            result = trainer.fit()
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    tags = client.get_run(run_id).data.tags
    echo(f"precision: {tags.get('accelab.precision')} ({tags.get('accelab.precision_reason')})")
    return TrainOutcome(
        mlflow_run_id=run_id,
        ray_run_name=ray_name,
        metrics=dict(result.metrics or {}),
        checkpoint_path=result.checkpoint.path if result.checkpoint else None,
        storage_path=storage_path(cfg),
    )
