"""One training epoch, and a plain in-process ``fit`` built on it.

This is accelab's only training loop: the Ray Train worker loop calls ``train_one_epoch``
on every DDP rank, and ``fit`` runs the same epoch function in the current process (no
Ray) for tests, benchmarks and the GPU check. The AMP idiom is nanoGPT's: ``autocast``
around the forward pass, a ``GradScaler`` (enabled for fp16 only) around backward/step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from accelab.training.precision import Precision

Loss = Callable[[Tensor, Tensor], Tensor]
# (output, inputs, targets) -> loss: a loss that also needs the inputs (distillation runs
# its teacher on them); when set it replaces ``loss`` in training (never in evaluation).
BatchLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class EpochContext:
    """Everything one epoch needs. ``state`` carries counters across epochs (and restarts):
    ``step`` (optimizer steps so far) and ``skipped_steps`` (fp16 steps GradScaler skipped)."""

    model: nn.Module
    loader: Iterable
    optimizer: torch.optim.Optimizer
    loss: Loss
    precision: Precision = field(default_factory=lambda: Precision("fp32", "default"))
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    scaler: torch.amp.GradScaler | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    after_step: Callable[[nn.Module, int], Any] | None = None
    inf_grad_at_step: int | None = None  # fault injection: GradScaler must skip this step
    step_delay_s: float = 0.0  # fault injection: slow every step down (chaos tests)
    batch_loss: BatchLoss | None = None
    state: dict[str, Any] = field(default_factory=lambda: {"step": 0, "skipped_steps": 0})

    def __post_init__(self) -> None:
        if self.scaler is None:
            self.scaler = self.precision.grad_scaler(self.device)


def _inject_inf(ctx: EpochContext) -> Tensor:
    before = torch.cat([p.detach().flatten().clone() for p in ctx.model.parameters()])
    next(p for p in ctx.model.parameters() if p.grad is not None).grad.fill_(math.inf)
    return before


def train_one_epoch(ctx: EpochContext) -> tuple[float, int]:
    """One pass over ``ctx.loader``. Returns (mean training loss, samples seen)."""
    model, scaler, state = ctx.model, ctx.scaler, ctx.state
    model.train()
    total_loss, samples = 0.0, 0
    for x, y in ctx.loader:
        x, y = x.to(ctx.device), y.to(ctx.device)
        ctx.optimizer.zero_grad(set_to_none=True)
        with ctx.precision.autocast(ctx.device):
            output = model(x)
            loss = ctx.batch_loss(output, x, y) if ctx.batch_loss else ctx.loss(output, y)
        scaler.scale(loss).backward()
        injected = ctx.inf_grad_at_step == state["step"]
        before = _inject_inf(ctx) if injected else None
        scale_before = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(ctx.optimizer)
        scaler.update()
        if scaler.is_enabled() and scaler.get_scale() < scale_before:
            state["skipped_steps"] += 1
        if before is not None:
            after = torch.cat([p.detach().flatten() for p in model.parameters()])
            state["inf_step_weight_change"] = float((after - before).abs().max())
        if ctx.scheduler is not None:
            ctx.scheduler.step()
        state["step"] += 1
        if ctx.after_step is not None:
            ctx.after_step(model, state["step"])
        if ctx.step_delay_s:
            time.sleep(ctx.step_delay_s)
        total_loss += float(loss.detach()) * len(y)
        samples += len(y)
    return total_loss / max(samples, 1), samples


def build_optimizer(
    name: str, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warm_steps: int = 0
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``constant`` (None) or ``cosine``: flat for ``warm_steps``, then cosine to zero."""
    if schedule == "constant" or total_steps <= 0:
        return None
    decay = max(1, total_steps - warm_steps)

    def factor(step: int) -> float:
        if step < warm_steps:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm_steps) / decay)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(
    model: nn.Module,
    dataset: TensorDataset,
    epochs: int,
    *,
    loss: Loss,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    optimizer: str = "adam",
    precision: Precision | None = None,
    device: str | torch.device = "cpu",
    threads: int | None = 1,
    schedule: str = "constant",
    after_step: Callable[[nn.Module, int], Any] | None = None,
    on_epoch: Callable[[int, float], Any] | None = None,
    batch_loss: BatchLoss | None = None,
) -> nn.Module:
    """Train ``model`` in this process with ``train_one_epoch`` (no Ray, no DDP).

    Runs on one thread by default: on a shared 2-core machine two spinning OpenMP threads
    can be many times slower than one whenever another process holds a core."""
    device = torch.device(device)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model.to(device)
        opt = build_optimizer(optimizer, model.parameters(), lr)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        ctx = EpochContext(
            model, loader, opt, loss, precision or Precision("fp32", "default"), device,
            scheduler=build_scheduler(opt, schedule, epochs * len(loader)), after_step=after_step,
            batch_loss=batch_loss,
        )  # fmt: skip
        for epoch in range(epochs):
            mean_loss, _ = train_one_epoch(ctx)
            if on_epoch is not None:
                on_epoch(epoch, mean_loss)
    finally:
        torch.set_num_threads(previous_threads)
    return model.eval()
