"""``compression.prune.layers``: per-layer sparsity for unstructured (one-shot and cubic)
and structured pruning, on real digits MLPs; the layers it names get their own sparsity,
the rest follow the global one, and ``layer_sparsity`` reads each layer's back."""

from __future__ import annotations

import copy

import pytest
import torch

from accelab.compress import CompressionError, GradualPruner, apply_structured
from accelab.compress.pipeline import compress_for_training
from accelab.compress.prune import apply_unstructured, layer_sparsity, make_masks
from accelab.config.schema import ExperimentConfig
from trainables.digits import TASK


def mlp(hidden=(64, 32)) -> torch.nn.Module:  # layers 1, 3 and the output 5
    torch.manual_seed(0)
    return TASK.build_model("mlp", hidden=list(hidden))


def test_unstructured_named_layers_get_their_own_sparsity_the_rest_the_global_one():
    model = mlp()
    pruned = apply_unstructured(copy.deepcopy(model), 0.5, "global", ["5"], {"1": 0.9, "3": 0.0})
    got = layer_sparsity(pruned)
    assert got["1"] == pytest.approx(0.9, abs=1e-3)
    assert got["3"] == 0.0 and got["5"] == 0.0  # 0 keeps a layer dense; 5 is excluded
    # the rest is ranked globally among themselves at the global sparsity
    rest = apply_unstructured(copy.deepcopy(model), 0.5, "global", ["5"], {"1": 0.0})
    assert layer_sparsity(rest)["1"] == 0.0
    assert layer_sparsity(rest)["3"] == pytest.approx(0.5, abs=1e-3)


def test_exact_name_wins_over_a_pattern_and_scope_layer_applies_to_the_rest():
    pruned = apply_unstructured(mlp(), 0.25, "layer", ["5"], {"[13]": 0.8, "3": 0.6})
    got = layer_sparsity(pruned)
    assert got["1"] == pytest.approx(0.8, abs=1e-3) and got["3"] == pytest.approx(0.6, abs=1e-3)
    plain = layer_sparsity(apply_unstructured(mlp(), 0.25, "layer", ["5"], {"1": 0.8}))
    assert plain["3"] == pytest.approx(0.25, abs=1e-3)


def test_masks_with_a_recipe_match_one_shot_pruning_and_the_cubic_schedule_per_layer():
    model = mlp()
    recipe = {"1": 0.9}
    masks = make_masks(model, 0.5, "global", ["5"], recipe)
    assert 1 - masks["1"].float().mean() == pytest.approx(0.9, abs=1e-3)
    oneshot = apply_unstructured(copy.deepcopy(model), 0.5, "global", ["5"], recipe)
    for name in ("1", "3"):
        assert torch.equal(masks[name], oneshot.get_submodule(name).weight != 0)
    pruner = GradualPruner(0.5, total_steps=10, scope="global", exclude=("5",),
                           layers=tuple(recipe.items()))  # fmt: skip
    half = copy.deepcopy(model)
    pruner.step(half, 5)
    # cubic at half way: s_f * (1 - 0.5**3) for each layer's own final sparsity
    assert layer_sparsity(half)["1"] == pytest.approx(0.9 * 0.875, abs=2e-3)
    end = copy.deepcopy(model)
    pruner.step(end, 10)
    assert layer_sparsity(end)["1"] == pytest.approx(0.9, abs=1e-3)


def test_structured_per_layer_ratio_and_layer_sparsity_against_the_dense_model():
    dense = mlp()
    pruned = apply_structured(copy.deepcopy(dense), 0.5, TASK.example_input(1), recipe={"1": 0.75})
    assert pruned.get_submodule("1").out_features == 16  # 64 * (1 - 0.75)
    assert pruned.get_submodule("3").out_features == 16  # 32 * (1 - 0.5)
    got = layer_sparsity(pruned, dense)
    assert got["1"] == pytest.approx(0.75) and got["3"] == pytest.approx(1 - 16 * 16 / (64 * 32))
    only3 = apply_structured(copy.deepcopy(dense), 0.0, TASK.example_input(1), recipe={"3": 0.5})
    assert only3.get_submodule("1").out_features == 64
    assert only3.get_submodule("3").out_features == 16
    with pytest.raises(CompressionError, match="layer '3'"):
        apply_structured(mlp((64, 1)), 0.5, TASK.example_input(1), recipe={"3": 0.5})


@pytest.mark.parametrize("method", ["unstructured", "structured"])
def test_compress_for_training_applies_the_recipe(method):
    cfg = ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": [64, 32]}},
        "compression": {"prune": {"method": method, "sparsity": 0.25, "layers": {"1": 0.75}}},
    })  # fmt: skip
    dense = mlp()
    model = compress_for_training(copy.deepcopy(dense), cfg.compression, TASK, calibration=None)
    got = layer_sparsity(model, dense)
    assert got["1"] == pytest.approx(0.75, abs=1e-3)
    # structured: layer 3 keeps 24 of 32 outputs and 16 of its 64 inputs (layer 1's outputs)
    expected = 0.25 if method == "unstructured" else 1 - 16 * 24 / (64 * 32)
    assert got["3"] == pytest.approx(expected, abs=1e-3)
