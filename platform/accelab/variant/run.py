"""One compression variant end to end, shared by ``accelab compress`` and sweep trials.

Read top to bottom in ``run_variant``: load the dense model, compress it, judge it on every
deployment target next to the dense model (in this process), let the caller stop early,
fine-tune on Ray Train (DDP, AMP) if asked, judge again, log to MLflow. The command's
``Setup`` (task, splits) comes in; a sweep trial makes its own in its Tune process.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path

from mlflow.tracking import MlflowClient
from torch import nn

from accelab.compress.pipeline import CompressionHooks, compress_for_training
from accelab.config.schema import ExperimentConfig
from accelab.measure import TorchRunner
from accelab.tracking import names
from accelab.tracking.client import client_env, log_metrics_once
from accelab.training.checkpoint import MODEL_FILE, load_model_state, read_meta
from accelab.training.launcher import build_trainer
from accelab.training.loop import LoopHooks, LoopSettings
from accelab.training.sync import with_retry
from accelab.variant.judge import Dense, VariantResult, judge, load_dense, train_loss
from accelab.variant.record import log_variant
from accelab.variant.sensitivity import (
    describe_fallback,
    fallback_metrics,
    fallback_tag,
    resolve_fallback,
)
from accelab.variant.setup import Setup
from trainables.splits import num_examples

__all__ = ["FINETUNE_PREFIX", "StopVariant", "VariantResult", "run_variant"]

FINETUNE_PREFIX = "finetune_"  # per-epoch fine-tuning metrics, apart from the final ones
LOSS_WARN_RATIO = 2.0  # fine-tuned training loss this many times the dense model's: warn


class StopVariant(Exception):
    """Raised by a stage callback to stop before fine-tuning (e.g. a broken constraint)."""


def compression_hooks(cfg: ExperimentConfig, dense_weights: Path, steps: int) -> CompressionHooks:
    """The per-worker hooks of a variant's fine-tune, with the config sections they read."""
    return CompressionHooks(
        cfg.trainable, cfg.compression, cfg.finetune, cfg.train.batch_size, str(dense_weights),
        steps_per_epoch=steps,
    )  # fmt: skip


def finetune_settings(
    cfg: ExperimentConfig, dense: Dense, dense_weights: Path, tracking_uri: str, run_id: str | None
):
    """(CompressionHooks, LoopSettings) of a variant's fine-tune: the ``finetune`` budget
    (epochs, lr, schedule) whatever the compression, the variant rebuilt on every worker."""
    steps = math.ceil(
        num_examples(dense.splits.train) / cfg.scaling.num_workers / cfg.train.batch_size
    )
    hooks = compression_hooks(cfg, dense_weights, steps)
    settings = LoopSettings(
        config=cfg.model_dump(mode="json"),
        tracking_uri=tracking_uri,
        mlflow_run_id=run_id,
        hooks=LoopHooks(hooks.transform, hooks.after_step, hooks.extra_metrics, hooks.batch_loss),
        epochs=cfg.finetune.epochs,
        lr=cfg.finetune.lr,
        metric_prefix=FINETUNE_PREFIX,
        schedule=cfg.finetune.schedule,
        mlflow_env=client_env(),
    )
    return hooks, settings


def finetune(
    setup: Setup,
    dense: Dense,
    dense_weights: Path,
    tracking_uri: str,
    run_id: str | None,
    ray_name: str,
    callbacks=None,
) -> tuple[nn.Module, float | None]:
    """Fine-tune the compressed model with TorchTrainer (DDP, AMP). Returns the fine-tuned
    model (rebuilt here from the checkpoint) and the seconds its training loop took."""
    cfg = setup.cfg
    hooks, settings = finetune_settings(cfg, dense, dense_weights, tracking_uri, run_id)
    result = build_trainer(cfg, settings, ray_name, callbacks).fit()
    with result.checkpoint.as_directory() as ckpt:
        state = load_model_state(Path(ckpt) / MODEL_FILE)
        history = read_meta(Path(ckpt))["history"]
    if run_id:  # what rank 0 could not write (a busy or absent store) is in the checkpoint
        client = MlflowClient(tracking_uri)
        for row in history:
            with_retry(lambda r=row: log_metrics_once(client, run_id, r["epoch"], r["metrics"]), 60)
    model = hooks.transform(setup.new_model(), dense.task)
    model.load_state_dict(state)
    return model, sum(row["metrics"][f"{FINETUNE_PREFIX}epoch_s"] for row in history)


def loss_warning(dense: Dense, model: nn.Module, cfg: ExperimentConfig) -> str | None:
    """A fine-tune that ends far above the dense model's training loss has not recovered."""
    loss = train_loss(TorchRunner(copy.deepcopy(model)), dense.task, dense.splits)
    if loss <= LOSS_WARN_RATIO * dense.train_loss + 0.05:
        return None
    return (
        f"fine-tuned training loss {loss:.3f} is far above the dense model's "
        f"{dense.train_loss:.3f}: the model has not recovered; raise finetune.epochs "
        f"(now {cfg.finetune.epochs}) or finetune.lr (now {cfg.finetune.lr:g}), or lower "
        f"compression.prune.sparsity (now {cfg.compression.prune.sparsity:g})"
    )


def run_variant(
    setup: Setup,
    dense_dir: Path,
    *,
    tracking_uri: str,
    run_id: str | None,
    ray_name: str,
    on_compressed: Callable[[VariantResult], None] | None = None,
    train_callbacks: list | None = None,
) -> VariantResult:
    """Run one variant; ``on_compressed`` sees the measured model before any fine-tuning
    and may raise ``StopVariant``."""
    dense = load_dense(setup, dense_dir)
    start = time.perf_counter()
    setup, fallback = resolve_fallback(setup, dense)  # quant.fallback auto: the float layers
    cfg = setup.cfg
    model = compress_for_training(
        copy.deepcopy(dense.model), cfg.compression, dense.task, dense.calibration
    )
    result = judge(dense, model, cfg)
    compute = time.perf_counter() - start  # this variant's own work, without start-ups
    if on_compressed:
        on_compressed(result)
    if cfg.finetune.epochs > 0:
        model, loop_s = finetune(
            setup, dense, dense_dir / MODEL_FILE, tracking_uri, run_id, ray_name, train_callbacks
        )
        start = time.perf_counter()
        result = judge(dense, model, cfg)
        compute += loop_s + time.perf_counter() - start
        if warning := loss_warning(dense, model, cfg):
            result.warnings.append(warning)
    result.metrics[names.M_COMPUTE_S] = compute
    if fallback is not None:
        result.metrics.update(fallback_metrics(fallback))
        result.notes.append(describe_fallback(fallback, dense.task.metric.transform == "exp"))
    if run_id:
        log_variant(tracking_uri, run_id, result, cfg)
        if fallback is not None:
            MlflowClient(tracking_uri).set_tag(run_id, names.FLOAT_FALLBACK, fallback_tag(fallback))
    return result
