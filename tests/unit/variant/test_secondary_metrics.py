"""A task's secondary metrics (a language model's next-token accuracy) are reported from
the test split, like the primary one: on a task whose validation labels are shifted, the
two splits give very different values, so a number taken from validation shows."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from accelab.config.schema import ExperimentConfig
from accelab.measure import per_example
from accelab.training.checkpoint import save_checkpoint
from accelab.variant.judge import judge, load_dense
from accelab.variant.setup import Setup
from tests import tasks
from tests.helpers_torch import trained_mlp


def top2(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.topk(2, dim=1).indices == y[:, None]).any(dim=1).double()


TASK = dataclasses.replace(tasks.SHIFTED_VAL, secondary={"top2_accuracy": top2})


def test_a_variants_secondary_metric_is_measured_on_the_test_split(tmp_path: Path):
    cfg = ExperimentConfig.model_validate({
        "trainable": {"name": "tests.tasks:SHIFTED_VAL", "model": "mlp",
                      "model_args": {"hidden": [64]}},
        "measure": {"rounds": 2, "warmup": 1, "repeats": 2, "threads": 1, "method": "rounds",
                    "targets": [{"runtime": "torch"}]},
    })  # fmt: skip
    model, _ = trained_mlp((64,), epochs=4)
    save_checkpoint(tmp_path, model, {"loop": {}},
                    {"epoch": 0, "history": [], "trainable": cfg.trainable.model_dump()})  # fmt: skip
    dense = load_dense(Setup(cfg, TASK), tmp_path)
    r = judge(dense, copy.deepcopy(dense.model), cfg)
    runner = r.primary.built.runner
    on_test = float(per_example(runner, dense.splits.test, TASK, fn=top2).mean())
    on_val = float(per_example(runner, dense.splits.val, TASK, fn=top2).mean())
    assert on_test - on_val > 0.2  # the test can tell the splits apart
    assert r.metrics["top2_accuracy"] == on_test
