"""Resume accounting without Ray: a loop restarted from the checkpoint of epoch k runs
epochs k+1.. only (never from 0: MLflow keeps one value per step, so a replay would not
show there), with the weights, optimizer, counters and history of epoch k."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from accelab.config.schema import ExperimentConfig
from accelab.training.checkpoint import epochs_left, save_checkpoint
from accelab.training.epoch import EpochContext, build_optimizer, build_scheduler, train_one_epoch
from accelab.training.loop import LoopHooks, LoopSettings, Worker, checkpoint_contents, resume_from
from accelab.training.tracker import Tracker
from trainables.digits import TASK

EPOCHS = 4


def worker(seed: int = 0) -> Worker:
    cfg = ExperimentConfig.model_validate({"trainable": {"model_args": {"hidden": [16]}}})
    torch.manual_seed(seed)
    splits = TASK.load_splits(0)
    model = TASK.build_model("mlp", hidden=[16])
    loader = DataLoader(torch.utils.data.Subset(splits.train, range(256)), batch_size=64)
    opt = build_optimizer("adam", model.parameters(), 1e-3)
    ctx = EpochContext(model, loader, opt, TASK.loss,
                       scheduler=build_scheduler(opt, "cosine", EPOCHS * len(loader)),
                       state={"epoch": -1, "step": 0, "skipped_steps": 0, "restarts": 0})  # fmt: skip
    settings = LoopSettings(cfg.model_dump(mode="json"), "", None, LoopHooks(), EPOCHS, 1e-3)
    return Worker(cfg, settings, TASK, 0, 1, ctx, splits, [])


def run_epoch(w: Worker, epoch: int) -> None:
    """What the loop does per epoch, minus validation and Ray's report."""
    loss, _ = train_one_epoch(w.ctx)
    w.ctx.state["epoch"] = epoch
    w.history.append({"epoch": epoch, "metrics": {"train_loss": loss}})


def test_a_fresh_loop_runs_every_planned_epoch():
    assert list(epochs_left({"epoch": -1}, EPOCHS)) == [0, 1, 2, 3]
    assert list(epochs_left({"epoch": 1}, EPOCHS)) == [2, 3]
    assert list(epochs_left({"epoch": EPOCHS - 1}, EPOCHS)) == []
    assert list(epochs_left(worker().ctx.state, EPOCHS)) == [0, 1, 2, 3]


def test_a_resumed_loop_continues_after_the_checkpointed_epoch(tmp_path):
    first = worker()
    for epoch in epochs_left(first.ctx.state, EPOCHS):
        run_epoch(first, epoch)
        if epoch == 1:  # the checkpoint of epoch 1; the worker dies after it
            save_checkpoint(tmp_path, first.ctx.model, *checkpoint_contents(first, epoch))
            break
    steps_per_epoch = first.ctx.state["step"] // 2
    second = worker(seed=1)  # a restarted worker builds everything afresh
    resume_from(second, tmp_path, Tracker("", None, 0, {}))
    assert list(epochs_left(second.ctx.state, EPOCHS)) == [2, 3]
    assert second.ctx.state["step"] == first.ctx.state["step"] == 2 * steps_per_epoch
    assert second.ctx.state["restarts"] == 1
    assert [row["epoch"] for row in second.history] == [0, 1]
    for a, b in zip(first.ctx.model.parameters(), second.ctx.model.parameters(), strict=True):
        assert torch.equal(a, b)
    lr = first.ctx.optimizer.param_groups[0]["lr"]  # the cosine schedule is where it was
    assert second.ctx.optimizer.param_groups[0]["lr"] == lr
    assert second.ctx.scheduler.last_epoch == first.ctx.scheduler.last_epoch
    for epoch in epochs_left(second.ctx.state, EPOCHS):
        run_epoch(second, epoch)
    assert [row["epoch"] for row in second.history] == list(range(EPOCHS))
    assert second.ctx.state["step"] == EPOCHS * steps_per_epoch  # 4 epochs of steps, not 6


def test_the_checkpoint_meta_names_the_epoch_and_the_plan(tmp_path):
    w = worker()
    run_epoch(w, 0)
    train_state, meta = checkpoint_contents(w, 0)
    assert (meta["epoch"], meta["epochs"], train_state["loop"]["epoch"]) == (0, EPOCHS, 0)
    assert meta["history"] == w.history and "scheduler" in train_state
