"""How accelab reads a split, whatever kind a task returns: the one module that tells them
apart, so training, evaluation and calibration never check types themselves.

A split is either a map-style torch ``Dataset`` of (input, label) pairs (a ``TensorDataset``
in memory, or one that reads lazily from files), or Ray Data: a ``ray.data.Dataset`` read
lazily (``ray.data.read_parquet`` and friends, local paths or object storage) with columns
``x`` (inputs) and ``y`` (labels), or a Ray Train worker's shard of one (a
``ray.data.DataIterator``). Ray is never imported here: a Ray split is recognised by
``iter_torch_batches``, and a task of torch splits pays nothing for Ray Data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset, TensorDataset

X, Y = "x", "y"  # the columns of a Ray Data split


def is_ray(split: Any) -> bool:
    """A Ray Data ``Dataset``, or a Ray Train shard of one (``DataIterator``)."""
    return hasattr(split, "iter_torch_batches")


def _ray_batches(split: Any, batch_size: int, **shuffle) -> Iterator[tuple[Tensor, Tensor]]:
    context = getattr(split, "context", None)  # a Dataset (a shard's order is set by Train)
    if context is not None and not shuffle:
        # evaluation pairs two models' values example by example: the same order every pass
        context.execution_options.preserve_order = True
    for batch in split.iter_torch_batches(batch_size=batch_size, device="cpu", **shuffle):
        yield batch[X], batch[Y]


def batches(split: Any, batch_size: int = 256) -> Iterator[tuple[Tensor, Tensor]]:
    """(inputs, labels) batches of the whole split, in the same order on every pass; only a
    batch (plus Ray Data's prefetch) is in memory at a time."""
    if is_ray(split):
        yield from _ray_batches(split, batch_size)
    else:
        yield from DataLoader(split, batch_size=batch_size)


def shard_batches(
    split: Any, rank: int, world: int, batch_size: int = 256
) -> Iterator[tuple[Tensor, Tensor]]:
    """Rank ``rank``'s share of the split for a metric summed across ranks: examples
    ``rank::world`` of a torch dataset; every ``world``-th batch of a Ray split, which each
    rank reads whole, in order (Ray Train hands every worker the unsplit evaluation splits)."""
    if is_ray(split):
        for i, batch in enumerate(_ray_batches(split, batch_size)):
            if i % world == rank:
                yield batch
    else:
        yield from DataLoader(Subset(split, range(rank, len(split), world)), batch_size=batch_size)


def examples_of(
    split: Any, limit: int | None = None, batch_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """The first ``limit`` (all when None) inputs and labels of a split as two tensors: a
    ``TensorDataset``'s own tensors (views, no copy), any other split read batch by batch
    until ``limit``, so only those examples are ever in memory."""
    if isinstance(split, TensorDataset):
        x, y = split.tensors[:2]
        return (x, y) if limit is None else (x[:limit], y[:limit])
    if not is_ray(split):
        n = len(split) if limit is None else min(limit, len(split))
        split = Subset(split, range(n))
    xs, ys, seen = [], [], 0
    for xb, yb in batches(split, batch_size):
        if limit is not None:
            xb, yb = xb[: limit - seen], yb[: limit - seen]
        xs.append(xb)
        ys.append(yb)
        seen += len(yb)
        if limit is not None and seen >= limit:
            break  # a Ray split stops reading here
    return torch.cat(xs), torch.cat(ys)


def num_examples(split: Any) -> int:
    """How many examples a split holds (a Ray ``Dataset`` counts them: for Parquet, from
    the files' metadata)."""
    return split.count() if is_ray(split) else len(split)


class ShardLoader:
    """A Ray Train worker's training batches: its shard of the train split
    (``ray.train.get_dataset_shard``), shuffled within a buffer with a seed per epoch.
    ``len`` is the batches in an epoch (the learning-rate schedule's step count)."""

    def __init__(self, shard: Any, rows: int, batch_size: int, seed: int, buffer: int = 1024):
        self.shard, self.rows, self.batch_size = shard, rows, batch_size
        self.seed, self.buffer, self.epoch = seed, buffer, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.rows // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return _ray_batches(
            self.shard, self.batch_size, local_shuffle_buffer_size=self.buffer,
            local_shuffle_seed=self.seed + self.epoch,
        )  # fmt: skip
