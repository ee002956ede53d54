"""The loop's own epoch (``loop.run_epoch``, what every Ray Train rank runs per epoch) without
Ray: a fine-tune restarted from the checkpoint of epoch 1 runs epochs 2 and 3 only, with
the counters and history of one uninterrupted run, and every epoch is scored on the
validation split (the test split only after the last one). The task's validation labels
are shifted, so a score taken from the other split shows."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from accelab.config.schema import ExperimentConfig
from accelab.measure import evaluate
from accelab.training.checkpoint import epochs_left, save_checkpoint
from accelab.training.epoch import EpochContext, build_optimizer, build_scheduler
from accelab.training.loop import (
    LoopHooks,
    LoopSettings,
    Worker,
    checkpoint_contents,
    resume_from,
    run_epoch,
)
from accelab.training.tracker import Tracker
from tests.tasks import SHIFTED_VAL

EPOCHS, PREFIX = 4, "finetune_"


def worker(seed: int = 0) -> Worker:
    """A rank as ``train_loop_per_worker`` builds it (a fresh start: epoch -1)."""
    cfg = ExperimentConfig.model_validate({"trainable": {"model_args": {"hidden": [16]}}})
    torch.manual_seed(seed)
    splits = SHIFTED_VAL.load_splits(0)
    model = SHIFTED_VAL.build_model("mlp", hidden=[16])
    loader = DataLoader(Subset(splits.train, range(512)), batch_size=32)
    opt = build_optimizer("adam", model.parameters(), 1e-2)
    ctx = EpochContext(model, loader, opt, SHIFTED_VAL.loss,
                       scheduler=build_scheduler(opt, "cosine", EPOCHS * len(loader)),
                       state={"epoch": -1, "step": 0, "skipped_steps": 0, "restarts": 0})  # fmt: skip
    settings = LoopSettings(cfg.model_dump(mode="json"), "", None, LoopHooks(), EPOCHS, 1e-2,
                            metric_prefix=PREFIX)  # fmt: skip
    return Worker(cfg, settings, SHIFTED_VAL, 0, 1, ctx, splits, [])


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Epochs 0 and 1, a checkpoint, a restarted rank that continues to the end."""
    directory = tmp_path_factory.mktemp("ckpt")
    first = worker()
    for epoch in epochs_left(first.ctx.state, EPOCHS):
        run_epoch(first, epoch)
        if epoch == 1:  # the rank dies after the checkpoint of epoch 1
            save_checkpoint(directory, first.ctx.model, *checkpoint_contents(first, epoch))
            break
    second = worker(seed=1)
    resume_from(second, directory, Tracker("", None, 0, {}))
    ran = list(epochs_left(second.ctx.state, EPOCHS))
    for epoch in ran:
        run_epoch(second, epoch)
    return first, second, ran


def test_a_restart_runs_each_planned_epoch_once(resumed):
    first, second, ran = resumed
    steps_per_epoch = len(first.ctx.loader)
    assert ran == [2, 3]
    assert [row["epoch"] for row in second.history] == list(range(EPOCHS))
    assert second.ctx.state["epoch"] == EPOCHS - 1
    assert not list(epochs_left(second.ctx.state, EPOCHS))  # nothing left to run
    assert second.ctx.state["step"] == EPOCHS * steps_per_epoch  # 4 epochs of steps, not 6
    assert second.ctx.scheduler.last_epoch == EPOCHS * steps_per_epoch
    assert second.ctx.state["restarts"] == 1


def test_each_epoch_is_scored_on_validation_and_only_the_last_on_test(resumed):
    _, second, _ = resumed
    w, name = second, SHIFTED_VAL.metric.name
    last = w.history[-1]["metrics"]
    assert last[f"{PREFIX}val_{name}"] == evaluate(w.ctx.model, w.splits.val, SHIFTED_VAL)
    assert last[f"{PREFIX}test_{name}"] == evaluate(w.ctx.model, w.splits.test, SHIFTED_VAL)
    assert last[f"{PREFIX}val_{name}"] < 0.3 < last[f"{PREFIX}test_{name}"]  # shifted labels
    for row in w.history[:-1]:
        assert f"{PREFIX}test_{name}" not in row["metrics"]
        assert row["metrics"][f"{PREFIX}val_{name}"] < 0.3
        assert row["metrics"][f"{PREFIX}train_examples"] == 512
