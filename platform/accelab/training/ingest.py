"""How a task's splits reach Ray Train's workers: torch datasets are loaded by every
worker and sampled per rank (``DistributedSampler``); Ray Data splits are handed to the
``TorchTrainer`` by the driver and streamed to each worker, the train split sharded
(``get_dataset_shard``), validation and test whole to every worker (Ray Train's
recommended ``DataConfig(datasets_to_split=["train"])``), in a fixed order so that each rank
scores its own batches of them (``trainables.splits.shard_batches``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray.train
import ray.train.torch
from torch.utils.data import DataLoader

from trainables.base import Splits, Task
from trainables.splits import ShardLoader, num_examples

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TrainerData:
    """What ``TorchTrainer`` gets: ``datasets`` and ``dataset_config`` (both empty for a
    task of torch splits), and the train split's size (each worker's share of it is
    ``train_rows // world``: Ray splits it into equal parts)."""

    datasets: dict[str, Any]
    dataset_config: Any
    train_rows: int | None


def trainer_data(task: Task, data_seed: int) -> TrainerData:
    """On the driver, once Ray is up: a Ray Data task's lazy datasets for the trainer."""
    if not task.ray_data:
        return TrainerData({}, None, None)
    splits = task.load_splits(data_seed)
    # evaluation reads val/test in order on every worker (each rank scores its batches)
    ordered = ray.train.DataConfig.default_ingest_options()
    ordered.preserve_order = True
    config = ray.train.DataConfig(
        datasets_to_split=["train"], execution_options={"val": ordered, "test": ordered}
    )
    datasets = dict(zip(SPLITS, (splits.train, splits.val, splits.test), strict=True))
    return TrainerData(datasets, config, num_examples(splits.train))


def worker_data(
    task: Task, splits: Splits, batch_size: int, seed: int, train_rows: int | None, world: int
) -> tuple[Any, Splits]:
    """This worker's training loader and the splits it evaluates on: a ``DataLoader`` over
    its ``DistributedSampler`` share of a torch split, or its Ray Train shard of a Ray one
    (with the val/test streams Ray Train gives every worker)."""
    if not task.ray_data:
        loader = ray.train.torch.prepare_data_loader(
            DataLoader(splits.train, batch_size=batch_size, shuffle=True)
        )
        return loader, splits
    shards = {name: ray.train.get_dataset_shard(name) for name in SPLITS}
    loader = ShardLoader(shards["train"], (train_rows or 0) // world, batch_size, seed)
    # training examples for the precision probe come from the task's own dataset: reading
    # a batch of the shard would start an epoch that the other workers do not join
    return loader, Splits(splits.train, shards["val"], shards["test"])


def set_epoch(loader: Any, epoch: int) -> None:
    """A new shuffle for ``epoch`` (a DistributedSampler's or a Ray shard's)."""
    target = getattr(loader, "sampler", loader)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)
