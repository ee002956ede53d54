"""``accelab train``: data-parallel training with mixed precision on Ray Train."""

from __future__ import annotations

from collections.abc import Callable

from accelab.config.schema import ExperimentConfig
from accelab.errors import collect
from accelab.preflight import check_measure_device, check_storage_path
from accelab.tasks import resolve_task
from accelab.tracking import names
from accelab.training.launcher import run_training


def train(cfg: ExperimentConfig, resume: bool | str, echo: Callable[[str], None] = print) -> None:
    collect(lambda: check_storage_path(cfg), lambda: check_measure_device(cfg))
    outcome = run_training(cfg, resume=resume, echo=echo)
    metric = resolve_task(cfg.trainable.name).metric.name
    value = outcome.metrics.get(names.on_test(metric), float("nan"))
    echo(
        f"done: test_{metric}={value:.4f} MLflow run {outcome.mlflow_run_id}; "
        f"checkpoint {outcome.checkpoint_path}"
    )
