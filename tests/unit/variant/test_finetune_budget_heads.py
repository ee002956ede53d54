"""Attention-head pruning gets the ``finetune`` budget too (epochs, lr, schedule), and the
model every worker fine-tunes is the head-pruned one (a tiny pylm GPT; no Ray)."""

from __future__ import annotations

import pytest
import torch

from accelab.compress.heads import head_counts
from accelab.config.schema import ExperimentConfig
from accelab.training.checkpoint import epochs_left, save_checkpoint
from accelab.variant.judge import Dense
from accelab.variant.run import finetune_settings
from trainables.pylm import TASK as PYLM

TINY = {"n_layer": 2, "n_head": 4, "d_model": 32}
TRAINABLE = {"name": "pylm", "model": "gpt", "model_args": TINY}


def gpt() -> torch.nn.Module:
    torch.manual_seed(0)
    return PYLM.build_model("gpt", **TINY)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """The dense weights on disk and what ``finetune_settings`` reads of the dense model
    (the training split's size); the runners and calibration are not needed for that."""
    directory = tmp_path_factory.mktemp("pylm")
    model = gpt()
    save_checkpoint(directory, model, {"loop": {}},
                    {"epoch": 0, "history": [], "trainable": TRAINABLE})  # fmt: skip
    return directory, Dense(model, PYLM, PYLM.load_splits(0), runners=None, calibration=None)


@pytest.mark.parametrize("epochs", [1, 3])
def test_head_pruning_fine_tunes_the_pruned_model_for_the_configured_budget(dense, epochs):
    directory, d = dense
    cfg = ExperimentConfig.model_validate({
        "trainable": TRAINABLE,
        "compression": {"prune": {"method": "heads", "sparsity": 0.5}},
        "finetune": {"epochs": epochs, "lr": 0.0123, "schedule": "constant"},
        "measure": {"targets": [{"runtime": "torch"}]},
    })  # fmt: skip
    _, s = finetune_settings(cfg, d, directory / "model.safetensors", "", None)
    assert (s.epochs, s.lr, s.schedule) == (epochs, 0.0123, "constant")
    assert list(epochs_left({"epoch": -1}, s.epochs)) == list(range(epochs))
    model = s.hooks.transform_model(gpt(), PYLM)  # what each worker trains
    assert list(head_counts(model).values()) == [2, 2]
