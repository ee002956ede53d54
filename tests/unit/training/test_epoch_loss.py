"""An epoch's training loss (the progress line's ``loss``, MLflow's ``train_loss``) is
the mean over the examples it trained on, whatever the batch sizes."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from accelab.training.epoch import EpochContext, train_one_epoch
from tests.tasks import SHIFTED_VAL


def test_an_epochs_training_loss_is_the_mean_over_its_examples():
    """100 examples in batches of 32 (the last one 4): each example weighs the same; with
    lr 0 the model does not change, so the mean is the whole subset's loss."""
    torch.manual_seed(0)
    model = SHIFTED_VAL.build_model("mlp", hidden=[16])
    train = Subset(SHIFTED_VAL.load_splits(0).train, range(100))
    ctx = EpochContext(model, DataLoader(train, batch_size=32),
                       torch.optim.SGD(model.parameters(), lr=0.0), SHIFTED_VAL.loss)  # fmt: skip
    loss, samples = train_one_epoch(ctx)
    x, y = (torch.stack(t) for t in zip(*(train[i] for i in range(100)), strict=True))
    with torch.no_grad():
        expected = float(SHIFTED_VAL.loss(model(x), y))
    assert samples == 100
    assert loss == pytest.approx(expected, rel=1e-5)
