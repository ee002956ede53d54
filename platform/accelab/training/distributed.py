"""Small collectives used by the per-worker loop (no-ops when not distributed)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from accelab.training.checkpoint import unwrap
from accelab.training.precision import Precision
from trainables.base import Task
from trainables.splits import shard_batches


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as held by rank ``src``, on every rank (itself when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def sharded_metric(
    model: nn.Module,
    dataset: Any,
    task: Task,
    rank: int,
    world: int,
    device: torch.device,
    precision: Precision,
    batch_size: int = 256,
    fn=None,
) -> float:
    """The task's metric over the whole dataset (or the mean of ``fn``'s per-example values):
    each rank scores its share (``shard_batches``: indices rank::world, no padding unlike
    DistributedSampler; or its batches of a Ray split), then sums and counts are added
    across ranks."""
    was_training = model.training
    model.eval()
    total = count = 0.0
    for x, y in shard_batches(dataset, rank, world, batch_size):
        x, y = x.to(device), y.to(device)
        with precision.autocast(device):
            logits = model(x)
        values = (fn or task.per_example)(logits.float(), y)
        total += float(values.sum())
        count += len(values)
    model.train(was_training)
    total, count = all_reduce_sum([total, count], device)
    mean = total / max(count, 1)
    return math.exp(mean) if fn is None and task.metric.transform == "exp" else mean


@torch.no_grad()
def replica_max_abs_diff(model: nn.Module, device: torch.device) -> float:
    """Max |param_rank0 - param_rankK| over all ranks: 0.0 when DDP replicas are in sync."""
    flat = torch.cat([p.detach().float().flatten() for p in unwrap(model).parameters()]).to(device)
    if not is_distributed():
        return 0.0
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)
