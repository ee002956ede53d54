"""``compression.quant.fallback: auto`` end to end in-process on a digits MLP with one
layer made fragile on purpose (layer "3" reads an always-zero hidden unit through a huge
weight: nothing in float, every other weight of the layer rounds to zero at int8). The
search must keep exactly that layer in float, the config it returns must say so, and the
int8 model built from it must leave that layer in float and meet the budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from accelab.compress.pipeline import finalize
from accelab.config.schema import ExperimentConfig
from accelab.measure import TorchRunner, drop, per_example
from accelab.training.checkpoint import save_checkpoint
from accelab.variant.judge import load_dense
from accelab.variant.sensitivity import describe_fallback, fallback_tag, resolve_fallback
from accelab.variant.setup import Setup
from tests.helpers_torch import trained_mlp

TRAINABLE = {"name": "digits", "model": "mlp", "model_args": {"hidden": [32, 32]}}


@pytest.fixture(scope="module")
def fragile_dir(tmp_path_factory) -> Path:
    model, _ = trained_mlp((32, 32), epochs=2)
    with torch.no_grad():
        model[1].weight[0].zero_()
        model[1].bias[0] = -1.0  # hidden unit 0 is always 0 after the ReLU
        model[3].weight[:, 0] = 1000.0  # layer "3" reads it through a huge weight
    directory = tmp_path_factory.mktemp("fragile")
    save_checkpoint(directory, model, {"loop": {}},
                    {"epoch": 1, "history": [], "trainable": TRAINABLE})  # fmt: skip
    return directory


def config(**quant) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": TRAINABLE, "measure": {"targets": [{"runtime": "torch"}]},
        "compression": {"quant": {"bits": 8, "fallback": "auto", "fallback_budget": 0.01,
                                  **quant}},
    })  # fmt: skip


def test_fallback_keeps_the_fragile_layer_in_float(fragile_dir):
    setup = Setup.of(config())
    dense = load_dense(setup, fragile_dir)
    new, found = resolve_fallback(setup, dense)
    assert found.ranking[0].layer == "3" and found.ranking[0].drop.lo > 0.03
    assert found.result.float_layers == ["3"] and found.result.met
    assert fallback_tag(found) == "3"
    assert [k for k, _ in found.result.steps] == [0, 1]  # 2 measurements for 3 layers
    assert "kept in float [3]" in describe_fallback(found)
    quant = new.cfg.compression.quant
    assert quant.layers == {"3": None} and quant.fallback == "none"

    deployed = finalize(dense.model, quant, dense.calibration)  # torch int8 kernels
    assert deployed.kind == "int8" and type(deployed.model[3]) is nn.Linear
    assert type(deployed.model[1]) is not nn.Linear
    values = per_example(TorchRunner(deployed.model), dense.splits.val, dense.task)
    assert drop(dense.val_values, values, dense.task.metric).value <= 0.01

    uniform = finalize(dense.model, config().compression.quant, dense.calibration)
    values = per_example(TorchRunner(uniform.model), dense.splits.val, dense.task)
    assert drop(dense.val_values, values, dense.task.metric).value > 0.03  # why it fell back


@pytest.mark.parametrize("quant", [{"fallback": "none"}, {"bits": 32}])
def test_no_fallback_leaves_the_setup_alone(fragile_dir, quant):
    setup = Setup.of(config(**quant))
    assert resolve_fallback(setup, load_dense(setup, fragile_dir)) == (setup, None)


def test_deployable_with_float_layers_loads_back(fragile_dir, tmp_path):
    from accelab.compress.deploy import load_deployable, save_deployable

    setup = Setup.of(config(fallback="none", layers={"3": "float"}))
    dense = load_dense(setup, fragile_dir)
    quant = setup.cfg.compression.quant
    for q in (quant, quant.model_copy(update={"real_kernel": False})):  # int8, fake-quant
        deployed = finalize(dense.model, q, dense.calibration)
        directory = save_deployable(deployed, tmp_path / deployed.kind, TRAINABLE, dense.model,
                                    q.model_dump())  # fmt: skip
        loaded = load_deployable(directory)
        assert type(loaded[3]) is nn.Linear, deployed.kind
        x = dense.splits.val[:64][0]
        with torch.inference_mode():
            assert torch.equal(loaded(x), deployed.model(x)), deployed.kind


def test_layers_already_float_are_not_searched(fragile_dir):
    setup = Setup.of(config(layers={"5": "float"}))
    new, found = resolve_fallback(setup, load_dense(setup, fragile_dir))
    assert sorted(row.layer for row in found.ranking) == ["1", "3"]
    assert new.cfg.compression.quant.layers == {"5": None, "3": None}


def test_the_fallback_is_searched_on_validation_never_on_test(fragile_dir):
    """The same fragile model on a task whose validation labels are shifted (every model
    scores ~0 there): quantizing layer "3" costs nothing on validation, so nothing falls
    back; on test it costs > 3 points, so a search that read the test split keeps it."""
    setup = Setup.of(ExperimentConfig.model_validate({
        "trainable": {**TRAINABLE, "name": "tests.tasks:SHIFTED_VAL"},
        "measure": {"targets": [{"runtime": "torch"}]},
        "compression": {"quant": {"bits": 8, "fallback": "auto", "fallback_budget": 0.01}},
    }))  # fmt: skip
    dense = load_dense(setup, fragile_dir)
    _, found = resolve_fallback(setup, dense)
    assert found.result.float_layers == [] and found.result.met
    uniform = finalize(dense.model, setup.cfg.compression.quant, dense.calibration)
    values = per_example(TorchRunner(uniform.model), dense.splits.test, dense.task)
    assert drop(dense.runners.test_values, values, dense.task.metric).value > 0.03
