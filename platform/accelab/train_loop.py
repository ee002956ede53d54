"""The per-worker training loop that Ray Train runs on every DDP rank.

Read top to bottom: set threads and seeds, build data and model (plus an optional
transform hook: pruning, fake-quant), wrap in DDP, resume from Ray Train's checkpoint,
then per epoch: train under autocast/GradScaler, validate, checkpoint, report, log.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn
from torch.utils.data import DataLoader

from accelab.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    save_model,
    set_rng_state,
)
from accelab.config.schema import ExperimentConfig
from accelab.distributed import replica_max_abs_diff, sharded_accuracy
from accelab.precision import Precision, resolve_precision
from accelab.registry import resolve_task
from trainables.base import Task


@dataclass
class LoopHooks:
    """Extension points for compression. All optional; all must be picklable.

    transform_model(model, task) -> model: before DDP wrapping (load weights, prune, fake-quant).
    after_step(model, step): after every optimizer step (re-apply pruning masks, schedules).
    extra_metrics(model, epoch) -> dict: merged into each epoch's metrics.
    """

    transform_model: Callable[[nn.Module, Task], nn.Module] | None = None
    after_step: Callable[[nn.Module, int], None] | None = None
    extra_metrics: Callable[[nn.Module, int], dict[str, float]] | None = None


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


def worker_threads(cfg: ExperimentConfig) -> int:
    tpw = cfg.scaling.threads_per_worker
    return tpw if isinstance(tpw, int) else max(1, int(cfg.scaling.cpus_per_worker))


def build_optimizer(cfg: ExperimentConfig, params, lr: float) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=t.weight_decay)


class Tracker:
    """Rank 0's MLflow writer; every other rank gets a no-op."""

    def __init__(self, settings: LoopSettings, rank: int):
        self.run_id = settings.mlflow_run_id if rank == 0 else None
        self.client = None
        if self.run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(settings.tracking_uri)

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self.client:
            from accelab.tracking import log_metrics_once

            log_metrics_once(self.client, self.run_id, step, metrics)

    def tags(self, tags: dict[str, str]) -> None:
        if self.client:
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, v)

    def model(self, model: nn.Module) -> None:
        if self.client:
            with tempfile.TemporaryDirectory() as tmp:
                save_model(model, Path(tmp, "model.safetensors"))
                self.client.log_artifact(self.run_id, str(Path(tmp, "model.safetensors")), "model")


def train_one_epoch(model, loader, optimizer, scaler, precision, device, state, settings, cfg):
    """One pass over this rank's shard. Returns (mean loss, samples seen)."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total_loss, samples = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(device):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        injected = cfg.faults.inf_grad_at_step == state["step"]
        if injected:
            before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
            next(p for p in model.parameters() if p.grad is not None).grad.fill_(math.inf)
        scale_before = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        if scaler.is_enabled() and scaler.get_scale() < scale_before:
            state["skipped_steps"] += 1
        if injected:
            after = torch.cat([p.detach().flatten() for p in model.parameters()])
            state["inf_step_weight_change"] = float((after - before).abs().max())
        state["step"] += 1
        if settings.hooks.after_step:
            settings.hooks.after_step(model, state["step"])
        total_loss += float(loss.detach()) * len(y)
        samples += len(y)
    return total_loss / max(samples, 1), samples


def train_loop_per_worker(settings: LoopSettings) -> None:
    cfg = ExperimentConfig.model_validate(settings.config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(worker_threads(cfg))
    torch.manual_seed(cfg.train.seed)
    device = ray.train.torch.get_device()
    precision: Precision = resolve_precision(cfg.train.precision, device)
    tracker = Tracker(settings, rank)

    task = resolve_task(cfg.trainable.name)
    splits = task.load_splits(cfg.trainable.data_seed)
    model = task.build_model(cfg.trainable.model, **cfg.trainable.model_args)
    if settings.hooks.transform_model:
        model = settings.hooks.transform_model(model, task)
    model = ray.train.torch.prepare_model(model)
    optimizer = build_optimizer(cfg, model.parameters(), settings.lr)
    scaler = precision.grad_scaler(device)
    state: dict[str, Any] = {"epoch": -1, "step": 0, "skipped_steps": 0, "restarts": 0}
    history: list[dict[str, Any]] = []

    checkpoint = ray.train.get_checkpoint()
    resumed = checkpoint is not None
    if resumed:
        with checkpoint.as_directory() as ckpt_dir:
            model_state, train_state, meta = load_checkpoint(Path(ckpt_dir))
        (model.module if hasattr(model, "module") else model).load_state_dict(model_state)
        optimizer.load_state_dict(train_state["optimizer"])
        scaler.load_state_dict(train_state["scaler"])
        set_rng_state(train_state["rng"])
        state.update(train_state["loop"])
        state["restarts"] += 1
        history = meta["history"]
        for row in history:  # backfill anything a crash kept out of MLflow (idempotent)
            tracker.metrics(row["epoch"], row["metrics"])
    tracker.tags(
        {
            "accelab.precision": precision.name,
            "accelab.precision_reason": precision.reason,
            "accelab.world_size": str(world),
            "accelab.threads_per_worker": str(torch.get_num_threads()),
            "accelab.backend_device": str(device),
            "accelab.restarts": str(state["restarts"]),
        }
    )

    loader = ray.train.torch.prepare_data_loader(
        DataLoader(splits.train, batch_size=cfg.train.batch_size, shuffle=True)
    )
    for epoch in range(state["epoch"] + 1, settings.epochs):
        if cfg.faults.fail_at_epoch == epoch and not resumed and rank == cfg.faults.fail_rank:
            raise RuntimeError(f"accelab fault injection: rank {rank} fails at epoch {epoch}")
        if world > 1:
            loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        loss, samples = train_one_epoch(
            model, loader, optimizer, scaler, precision, device, state, settings, cfg
        )
        seconds = time.perf_counter() - start
        p = settings.metric_prefix
        metrics: dict[str, Any] = {
            f"{p}train_loss": loss,
            f"{p}val_accuracy": sharded_accuracy(model, splits.val, rank, world, device, precision),
            f"{p}samples_per_s": samples * world / seconds,
            f"{p}epoch_s": seconds,
        }
        if scaler.is_enabled():
            metrics[f"{p}amp_scale"] = scaler.get_scale()
            metrics[f"{p}amp_skipped_steps"] = state["skipped_steps"]
        if "inf_step_weight_change" in state:
            metrics[f"{p}fault_inf_step_weight_change"] = state["inf_step_weight_change"]
        if settings.hooks.extra_metrics:
            metrics.update(
                {p + k: v for k, v in settings.hooks.extra_metrics(model, epoch).items()}
            )
        if epoch == settings.epochs - 1:
            metrics[f"{p}test_accuracy"] = sharded_accuracy(
                model, splits.test, rank, world, device, precision
            )
            metrics[f"{p}ddp_param_max_abs_diff"] = replica_max_abs_diff(model, device)
        state["epoch"] = epoch
        history.append({"epoch": epoch, "metrics": metrics})
        report(model, optimizer, scaler, state, history, metrics, cfg, rank, epoch)
        tracker.metrics(epoch, metrics)
    if rank == 0 and settings.mlflow_run_id:
        tracker.model(model)


def report(model, optimizer, scaler, state, history, metrics, cfg, rank, epoch) -> None:
    """Checkpoint (rank 0 writes it) and report to Ray Train: a barrier across ranks."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            train_state = {
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
                "loop": dict(state),
            }
            meta = {
                "epoch": epoch,
                "history": history,
                "trainable": cfg.trainable.model_dump(),
            }
            save_checkpoint(Path(tmp), model, train_state, meta)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({**metrics, "epoch": epoch}, checkpoint=checkpoint)
