"""Small collectives used by the per-worker loop (no-ops when not distributed)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from accelab.checkpoint import unwrap
from accelab.precision import Precision


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


@torch.no_grad()
def sharded_accuracy(
    model: nn.Module,
    dataset: TensorDataset,
    rank: int,
    world: int,
    device: torch.device,
    precision: Precision,
    batch_size: int = 256,
) -> float:
    """Exact accuracy over the whole dataset: each rank scores indices rank::world (no
    padding, unlike DistributedSampler), then counts are summed across ranks."""
    was_training = model.training
    model.eval()
    shard = Subset(dataset, range(rank, len(dataset), world))
    correct = total = 0
    for x, y in DataLoader(shard, batch_size=batch_size):
        x, y = x.to(device), y.to(device)
        with precision.autocast(device):
            logits = model(x)
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    model.train(was_training)
    correct, total = all_reduce_sum([correct, total], device)
    return correct / max(total, 1)


@torch.no_grad()
def replica_max_abs_diff(model: nn.Module, device: torch.device) -> float:
    """Max |param_rank0 - param_rankK| over all ranks: 0.0 when DDP replicas are in sync."""
    flat = torch.cat([p.detach().float().flatten() for p in unwrap(model).parameters()]).to(device)
    if not is_distributed():
        return 0.0
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)
