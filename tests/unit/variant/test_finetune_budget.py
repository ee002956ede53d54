"""The ``finetune`` budget (epochs, lr, schedule) reaches the training loop for every kind
of variant, and the loop runs exactly that many epochs (the settings Ray Train gets,
built here without Ray; the epochs a loop runs from ``epochs_left``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from accelab.config.schema import ExperimentConfig
from accelab.training.checkpoint import epochs_left, save_checkpoint
from accelab.variant.judge import load_dense
from accelab.variant.run import FINETUNE_PREFIX, finetune_settings
from accelab.variant.setup import Setup
from tests.helpers_torch import trained_mlp
from trainables.digits import TASK

KINDS = {
    "structured": {"prune": {"method": "structured", "sparsity": 0.5}},
    "unstructured": {"prune": {"method": "unstructured", "sparsity": 0.5}},
    "cubic": {"prune": {"method": "unstructured", "sparsity": 0.5, "schedule": "cubic"}},
    "ptq": {"quant": {"bits": 4, "mode": "ptq"}},
    "qat": {"quant": {"bits": 4, "mode": "qat"}},
    "structured+int8": {"prune": {"method": "structured", "sparsity": 0.5}, "quant": {"bits": 8}},
}


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory) -> Path:
    model, _ = trained_mlp((32,), epochs=1)
    directory = tmp_path_factory.mktemp("dense")
    save_checkpoint(directory, model, {"loop": {}}, {"epoch": 0, "history": [],
                    "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": [32]}}})  # fmt: skip
    return directory


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("epochs", [1, 3])
def test_every_variant_fine_tunes_for_the_configured_budget(dense_dir, kind, epochs):
    cfg = ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": [32]}},
        "compression": KINDS[kind],
        "finetune": {"epochs": epochs, "lr": 0.0123, "schedule": "constant"},
        "measure": {"targets": [{"runtime": "torch"}]},
    })  # fmt: skip
    dense = load_dense(Setup.of(cfg), dense_dir)
    hooks, s = finetune_settings(cfg, dense, dense_dir / "model.safetensors", "", None)
    assert (s.epochs, s.lr, s.schedule) == (epochs, 0.0123, "constant")
    assert s.metric_prefix == FINETUNE_PREFIX
    assert list(epochs_left({"epoch": -1}, s.epochs)) == list(range(epochs))
    assert s.config == cfg.model_dump(mode="json")  # every worker rebuilds this variant
    model = s.hooks.transform_model(TASK.build_model("mlp", hidden=[32]), TASK)
    hidden = model[1].out_features if hasattr(model[1], "out_features") else None
    if kind.startswith("structured"):  # the fine-tune trains the pruned model, not the dense one
        assert hidden == 16
    if kind == "cubic":  # the schedule spans the fine-tune it is given
        steps = hooks.steps_per_epoch * epochs
        assert hooks.pruner.total_steps == max(1, int(steps * cfg.compression.prune.ramp_fraction))


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_distillation_reaches_the_workers_only_when_asked(dense_dir, weight):
    cfg = ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": [32]}},
        "compression": KINDS["structured"],
        "finetune": {"epochs": 1, "distill": {"weight": weight, "temperature": 4.0}},
        "measure": {"targets": [{"runtime": "torch"}]},
    })  # fmt: skip
    _, s = finetune_settings(
        cfg, load_dense(Setup.of(cfg), dense_dir), dense_dir / "model.safetensors", "", None
    )
    loss = s.hooks.batch_loss(TASK, torch.device("cpu"))  # what each worker's loop calls
    if weight == 0:
        assert loss is None  # the loop keeps task.loss: nothing changes
    else:
        assert (loss.weight, loss.temperature) == (0.5, 4.0) and not loss.teacher.training
