"""DDP's collectives on a real gloo process group of 2 ranks (spawned here, no Ray): a
metric is the whole split's mean however it is sharded, gradients are averaged across
ranks through ``train_one_epoch`` (replicas stay equal and match one process training on
the union), and the replica check sees a drift."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from accelab.measure import evaluate
from accelab.training.distributed import all_reduce_sum, replica_max_abs_diff, sharded_metric
from accelab.training.epoch import EpochContext, build_optimizer, train_one_epoch
from accelab.training.precision import Precision
from trainables.digits import TASK

CPU, FP32 = torch.device("cpu"), Precision("fp32", "test")
N, BATCH = 128, 32  # examples trained on (split between the ranks), per-rank batch


def model(seed: int = 0):
    torch.manual_seed(seed)
    return TASK.build_model("mlp", hidden=[16])


def sgd_step_on(m, data, batch):
    """One epoch of ``train_one_epoch`` with plain SGD (the averaged gradient is the step)."""
    opt = build_optimizer("sgd", m.parameters(), 0.5, momentum=0.0)
    ctx = EpochContext(m, DataLoader(data, batch_size=batch), opt, TASK.loss, FP32, CPU)
    train_one_epoch(ctx)
    return m


def test_a_sharded_metric_is_the_mean_over_the_whole_split_on_one_rank():
    m, val = model(), TASK.load_splits(0).val
    assert sharded_metric(m, val, TASK, 0, 1, CPU, FP32, batch_size=50) == evaluate(m, val, TASK)


def _rank(rank: int, world: int, store_path: str) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    try:
        splits = TASK.load_splits(0)
        # each rank scores its shard; sums and counts are added across ranks
        m = model()
        whole = evaluate(m, splits.val, TASK)
        assert abs(sharded_metric(m, splits.val, TASK, rank, world, CPU, FP32) - whole) < 1e-12
        assert all_reduce_sum([1.0, rank], CPU) == [world, sum(range(world))]
        # DDP through accelab's epoch: rank r trains on examples r::world (2 batches of 32)
        train = Subset(splits.train, range(N))
        ddp = DistributedDataParallel(model())
        sgd_step_on(ddp, Subset(train, range(rank, N, world)), BATCH)
        assert replica_max_abs_diff(ddp, CPU) == 0.0
        # one process, each step on the union of the ranks' batches: the same weights
        shards = [range(r, N, world) for r in range(world)]
        union = [i for b in range(N // world // BATCH) for shard in shards
                 for i in shard[b * BATCH : (b + 1) * BATCH]]  # fmt: skip
        alone = sgd_step_on(model(), Subset(train, union), BATCH * world)
        for a, b in zip(ddp.module.parameters(), alone.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6), float((a - b).abs().max())
        with torch.no_grad():  # a replica that drifted is seen
            if rank == 1:
                next(ddp.module.parameters()).add_(0.25)
        assert abs(replica_max_abs_diff(ddp, CPU) - 0.25) < 1e-6
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_average_gradients_and_reduce_metrics(tmp_path):
    # spawned, not forked: a fork of a pytest process whose earlier tests started torch's
    # thread pools deadlocked in gloo's rendezvous (the whole fast subset hung here)
    mp.start_processes(_rank, args=(2, str(tmp_path / "store")), nprocs=2, join=True,
                       start_method="spawn")  # fmt: skip
