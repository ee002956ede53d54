"""The per-worker training loop that Ray Train runs on every DDP rank.

Read top to bottom: set threads and seeds, build data and model (plus an optional
transform hook: pruning, fake-quant), wrap in DDP, resume from Ray Train's checkpoint,
then per epoch: ``train_one_epoch`` under autocast/GradScaler, validate, checkpoint,
report, log.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn

from accelab.config.schema import ExperimentConfig
from accelab.tasks import build_model, resolve_task
from accelab.tracking import names
from accelab.training.checkpoint import (
    epochs_left,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from accelab.training.distributed import (
    broadcast_object,
    gather_objects,
    replica_max_abs_diff,
    sharded_metric,
)
from accelab.training.epoch import (
    BatchLoss,
    EpochContext,
    build_optimizer,
    build_scheduler,
    train_one_epoch,
)
from accelab.training.ingest import set_epoch, worker_data
from accelab.training.precision import Precision, resolve_precision
from accelab.training.tracker import Tracker
from trainables.base import Splits, Task, examples_of


@dataclass
class LoopHooks:
    """Extension points for compression. All optional; all must be picklable.

    transform_model(model, task) -> model: before DDP wrapping (load weights, prune, fake-quant).
    after_step(model, step): after every optimizer step (re-apply pruning masks, schedules).
    extra_metrics(model, epoch) -> dict: merged into each epoch's metrics.
    batch_loss(task, device) -> BatchLoss | None: the training loss, built on the worker
        (distillation loads its teacher onto the worker's device); None = ``task.loss``.
    """

    transform_model: Callable[[nn.Module, Task], nn.Module] | None = None
    after_step: Callable[[nn.Module, int], None] | None = None
    extra_metrics: Callable[[nn.Module, int], dict[str, float]] | None = None
    batch_loss: Callable[[Task, torch.device], BatchLoss | None] | None = None


@dataclass
class LoopSettings:
    """What the driver hands every worker (Ray pickles this into train_loop_config)."""

    config: dict[str, Any]
    tracking_uri: str
    mlflow_run_id: str | None
    hooks: LoopHooks
    epochs: int
    lr: float
    metric_prefix: str = ""
    schedule: str = "constant"
    mlflow_env: dict[str, str] = field(default_factory=dict)  # MLFLOW_* of the driver
    train_rows: int | None = None  # a Ray Data train split's size (set by ``build_trainer``)


def worker_threads(cfg: ExperimentConfig) -> int:
    tpw = cfg.scaling.threads_per_worker
    return tpw if isinstance(tpw, int) else max(1, int(cfg.scaling.cpus_per_worker))


@dataclass
class Worker:
    """This rank's view of the run, handed to ``report`` and ``epoch_metrics``."""

    cfg: ExperimentConfig
    settings: LoopSettings
    task: Task
    rank: int
    world: int
    ctx: EpochContext
    splits: Splits
    history: list[dict[str, Any]]


def train_loop_per_worker(settings: LoopSettings) -> None:
    cfg = ExperimentConfig.model_validate(settings.config)
    train_ctx = ray.train.get_context()
    rank, world = train_ctx.get_world_rank(), train_ctx.get_world_size()
    tracker = Tracker(settings.tracking_uri, settings.mlflow_run_id, rank, settings.mlflow_env)
    torch.set_num_threads(worker_threads(cfg))
    torch.manual_seed(cfg.train.seed)
    device = ray.train.torch.get_device()
    task = resolve_task(cfg.trainable.name)
    model = build_model(cfg.trainable)
    if settings.hooks.transform_model:
        model = settings.hooks.transform_model(model, task)
    splits = task.load_splits(cfg.trainable.data_seed)
    precision = agree_on_precision(cfg, device, model, task, splits, rank)
    model = ray.train.torch.prepare_model(model)
    loader, splits = worker_data(
        task, splits, cfg.train.batch_size, cfg.train.seed, settings.train_rows, world
    )
    optimizer = build_optimizer(
        cfg.train.optimizer, model.parameters(), settings.lr, cfg.train.momentum,
        cfg.train.weight_decay,
    )  # fmt: skip
    ctx = EpochContext(
        model, loader, optimizer, task.loss, precision, device,
        scheduler=build_scheduler(optimizer, settings.schedule, settings.epochs * len(loader)),
        after_step=settings.hooks.after_step, inf_grad_at_step=cfg.faults.inf_grad_at_step,
        step_delay_s=cfg.faults.step_delay_s,
        batch_loss=settings.hooks.batch_loss(task, device) if settings.hooks.batch_loss else None,
        state={"epoch": -1, "step": 0, "skipped_steps": 0, "restarts": 0},
    )  # fmt: skip
    w = Worker(cfg, settings, task, rank, world, ctx, splits, [])

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        restore(w, checkpoint, tracker)
    tracker.tags(
        {
            names.PRECISION: precision.name,
            names.PRECISION_REASON: precision.reason,
            names.WORLD_SIZE: str(world),
            names.THREADS_PER_WORKER: str(torch.get_num_threads()),
            names.BACKEND_DEVICE: str(device),
            names.RESTARTS: str(ctx.state["restarts"]),
            # the Ray node of each rank, in rank order: where this (re)started group runs
            names.WORKER_NODES: ",".join(gather_objects(ray.get_runtime_context().get_node_id())),
        }
    )
    for epoch in epochs_left(ctx.state, settings.epochs):
        fault = cfg.faults
        if fault.fail_at_epoch == epoch and not ctx.state["restarts"] and rank == fault.fail_rank:
            raise RuntimeError(f"accelab fault injection: rank {rank} fails at epoch {epoch}")
        metrics = run_epoch(w, epoch)
        report(w, metrics, epoch)
        tracker.metrics(epoch, metrics)
    tracker.model(model)


def run_epoch(w: Worker, epoch: int) -> dict[str, Any]:
    """Train and score ``epoch`` on this rank, then mark it done: the counter a restart
    continues after (``epochs_left``) and the epoch's row of the history the checkpoint
    carries. Ray's report and MLflow's log follow in the loop (this part runs without Ray)."""
    ctx = w.ctx
    set_epoch(ctx.loader, epoch)
    start = time.perf_counter()
    loss, samples = train_one_epoch(ctx)
    metrics = epoch_metrics(w, epoch, loss, samples, time.perf_counter() - start)
    ctx.state["epoch"] = epoch
    w.history.append({"epoch": epoch, "metrics": metrics})
    return metrics


def agree_on_precision(
    cfg: ExperimentConfig, device: torch.device, model: nn.Module, task: Task, splits, rank: int
) -> Precision:
    """Rank 0 resolves ``train.precision`` (``auto`` measures) and every rank uses its choice."""
    choice = None
    if rank == 0:
        batch = examples_of(splits.train, cfg.train.batch_size)
        choice = resolve_precision(cfg.train.precision, device, model, batch, task.loss)
    return broadcast_object(choice)


def restore(w: Worker, checkpoint, tracker: Tracker) -> None:
    """Continue from Ray Train's checkpoint (see ``resume_from``)."""
    with checkpoint.as_directory() as ckpt_dir:
        resume_from(w, Path(ckpt_dir), tracker)


def resume_from(w: Worker, directory: Path, tracker: Tracker) -> None:
    """Continue from a checkpoint directory: weights, optimizer, scaler, schedule, RNG,
    counters; then backfill anything a crash kept out of MLflow (idempotent)."""
    model_state, train_state, meta = load_checkpoint(directory)
    ctx = w.ctx
    (ctx.model.module if hasattr(ctx.model, "module") else ctx.model).load_state_dict(model_state)
    ctx.optimizer.load_state_dict(train_state["optimizer"])
    ctx.scaler.load_state_dict(train_state["scaler"])
    if ctx.scheduler is not None and "scheduler" in train_state:
        ctx.scheduler.load_state_dict(train_state["scheduler"])
    set_rng_state(train_state["rng"])
    ctx.state.update(train_state["loop"])
    ctx.state["restarts"] += 1
    w.history = meta["history"]
    for row in w.history:
        tracker.metrics(row["epoch"], row["metrics"])


def epoch_metrics(
    w: Worker, epoch: int, loss: float, samples: int, seconds: float
) -> dict[str, Any]:
    ctx, p, name = w.ctx, w.settings.metric_prefix, w.task.metric.name

    def score(split, fn=None) -> float:
        return sharded_metric(
            ctx.model, split, w.task, w.rank, w.world, ctx.device, ctx.precision, fn=fn
        )

    counts = gather_objects(samples)
    metrics: dict[str, Any] = {
        f"{p}train_loss": loss,
        p + names.on_val(name): score(w.splits.val),
        **{p + names.on_val(k): score(w.splits.val, fn) for k, fn in w.task.secondary.items()},
        f"{p}samples_per_s": samples * w.world / seconds,
        # examples trained on this epoch, over all ranks, and how unequal the ranks' shares
        # were (0: each rank read its own equal share, none read the whole split)
        f"{p}train_examples": sum(counts),
        f"{p}train_examples_rank_spread": max(counts) - min(counts),
        f"{p}epoch_s": seconds,
    }
    if ctx.scaler.is_enabled():
        metrics[f"{p}amp_scale"] = ctx.scaler.get_scale()
        metrics[f"{p}amp_skipped_steps"] = ctx.state["skipped_steps"]
    if "inf_step_weight_change" in ctx.state:
        metrics[f"{p}fault_inf_step_weight_change"] = ctx.state["inf_step_weight_change"]
    if w.settings.hooks.extra_metrics:
        extra = w.settings.hooks.extra_metrics(ctx.model, epoch)
        metrics.update({p + k: v for k, v in extra.items()})
    if epoch == w.settings.epochs - 1:
        metrics[p + names.on_test(name)] = score(w.splits.test)
        metrics.update(
            {p + names.on_test(k): score(w.splits.test, fn) for k, fn in w.task.secondary.items()}
        )
        metrics[f"{p}ddp_param_max_abs_diff"] = replica_max_abs_diff(ctx.model, ctx.device)
    return metrics


def report(w: Worker, metrics: dict[str, Any], epoch: int) -> None:
    """Checkpoint (rank 0 writes it) and report to Ray Train: a barrier across ranks."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if w.rank == 0:
            save_checkpoint(Path(tmp), w.ctx.model, *checkpoint_contents(w, epoch))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({**metrics, "epoch": epoch}, checkpoint=checkpoint)


def checkpoint_contents(w: Worker, epoch: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(train_state, meta) of the checkpoint after ``epoch``: what ``resume_from`` needs to
    continue exactly where this epoch ended."""
    ctx = w.ctx
    train_state = {
        "optimizer": ctx.optimizer.state_dict(),
        "scaler": ctx.scaler.state_dict(),
        "rng": rng_state(),
        "loop": dict(ctx.state),
    }
    if ctx.scheduler is not None:
        train_state["scheduler"] = ctx.scheduler.state_dict()
    meta = {
        "epoch": epoch,
        "epochs": w.settings.epochs,
        "history": w.history,
        "trainable": w.cfg.trainable.model_dump(),
        "mlflow": {"tracking_uri": w.settings.tracking_uri, "run_id": w.settings.mlflow_run_id},
    }
    return train_state, meta
