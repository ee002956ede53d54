"""A fine-tune's steps per epoch are the optimizer steps each DDP worker really takes (its
``DistributedSampler`` share of the training split in batches of ``train.batch_size``), so
the cubic pruning schedule reaches its final sparsity inside the fine-tune on any number
of workers, not after it (built without Ray, as test_finetune_budget.py does)."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.data import DataLoader, DistributedSampler

from accelab.config.schema import ExperimentConfig
from accelab.training.checkpoint import save_checkpoint
from accelab.variant.judge import load_dense
from accelab.variant.run import finetune_settings
from accelab.variant.setup import Setup
from tests.helpers_torch import trained_mlp
from trainables.digits import TASK

MLP = {"name": "digits", "model": "mlp", "model_args": {"hidden": [32]}}


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory) -> Path:
    model, _ = trained_mlp((32,), epochs=1)
    directory = tmp_path_factory.mktemp("dense")
    save_checkpoint(directory, model, {"loop": {}}, {"epoch": 0, "history": [], "trainable": MLP})
    return directory


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_steps_per_epoch_are_each_workers_share_of_the_training_split(dense_dir, workers):
    cfg = ExperimentConfig.model_validate({
        "trainable": MLP, "scaling": {"num_workers": workers}, "train": {"batch_size": 32},
        "compression": {"prune": {"method": "unstructured", "sparsity": 0.5, "schedule": "cubic"}},
        "finetune": {"epochs": 2}, "measure": {"targets": [{"runtime": "torch"}]},
    })  # fmt: skip
    dense = load_dense(Setup.of(cfg), dense_dir)
    hooks, s = finetune_settings(cfg, dense, dense_dir / "model.safetensors", "", None)
    train = dense.splits.train
    # what Ray Train's prepare_data_loader gives rank 0 of ``workers``
    sampler = DistributedSampler(train, num_replicas=workers, rank=0, shuffle=True)
    steps = len(DataLoader(train, batch_size=32, sampler=sampler))
    assert hooks.steps_per_epoch == steps
    s.hooks.transform_model(TASK.build_model("mlp", hidden=[32]), TASK)
    ramp = cfg.compression.prune.ramp_fraction
    assert hooks.pruner.total_steps == max(1, int(steps * 2 * ramp))
