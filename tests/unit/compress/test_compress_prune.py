"""Pruning primitives on the real digits data: exact sparsity, honest speed, real shrinking."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from accelab.compress import (
    CompressionError,
    GradualPruner,
    apply_structured,
    apply_unstructured,
    check_layer_names,
    cubic_sparsity,
    make_masks,
    prunable_layers,
    sparsity_report,
)
from tests.helpers_torch import accuracy as evaluate_accuracy
from tests.helpers_torch import median_speedup, train, trained_mlp
from trainables.digits import TASK


@pytest.fixture(scope="module")
def small():
    return trained_mlp((256, 256))


@pytest.fixture(scope="module")
def wide():
    """Linear-heavy enough that removing channels is measurable at batch 64."""
    return trained_mlp((1024, 1024), epochs=4)


def test_prunable_layers_and_exclude(small):
    model, _ = small
    assert [name for name, _ in prunable_layers(model)] == ["1", "3", "5"]
    assert [name for name, _ in prunable_layers(model, exclude=["5"])] == ["1", "3"]
    assert [name for name, _ in prunable_layers(TASK.build_model("cnn"), ["fc2"])] == [
        "conv",
        "fc1",
    ]


def test_check_layer_names_reports_unknown(small):
    model, _ = small
    assert check_layer_names(model, ["1", "3"]) == []
    assert check_layer_names(model, ["1", "fc9", "3.weight"]) == ["fc9", "3.weight"]
    with pytest.raises(CompressionError, match="fc9"):
        apply_unstructured(copy.deepcopy(model), 0.5, exclude=["fc9"])


def test_global_unstructured_exact_sparsity(small):
    model, splits = small
    pruned = apply_unstructured(copy.deepcopy(model), 0.9, scope="global")
    report = sparsity_report(pruned)
    assert report["prunable_zeros"] == round(0.9 * report["prunable_params"])
    assert report["sparsity"] == pytest.approx(0.9, abs=0.005)
    assert report["params"] == sparsity_report(model)["params"]  # dense tensors stay
    assert all(not hasattr(m, "weight_orig") for _, m in prunable_layers(pruned))
    assert evaluate_accuracy(pruned, splits.test) > 0.5


def test_layer_unstructured_prunes_each_layer(small):
    model, _ = small
    pruned = apply_unstructured(copy.deepcopy(model), 0.5, scope="layer", exclude=["5"])
    for name, layer in prunable_layers(pruned):
        zeros = float((layer.weight == 0).float().mean())
        assert zeros == pytest.approx(0.0 if name == "5" else 0.5, abs=0.005)


def test_unstructured_speedup_is_about_one(wide):
    model, splits = wide
    pruned = apply_unstructured(copy.deepcopy(model), 0.9)
    speedup = median_speedup(model, pruned, splits.test)
    aa = median_speedup(model, copy.deepcopy(model), splits.test)  # the noise, same method
    assert abs(speedup - 1.0) <= max(0.3, 3 * abs(aa - 1.0)), (speedup, aa)


def test_structured_shrinks_speeds_up_and_recovers(wide):
    model, splits = wide
    baseline_acc = evaluate_accuracy(model, splits.test)
    pruned = apply_structured(copy.deepcopy(model), 0.5, TASK.example_input(1))
    assert [m.out_features for _, m in prunable_layers(pruned)] == [512, 512, 10]
    assert sparsity_report(pruned)["params"] < sparsity_report(model)["params"] / 2
    assert median_speedup(model, pruned, splits.test, warmup=5, repeats=30) > 1.0
    train(pruned, splits.train, epochs=2, lr=5e-4)
    assert evaluate_accuracy(pruned, splits.test) >= baseline_acc - 0.02


def test_structured_cnn_follows_dependencies():
    model = apply_structured(TASK.build_model("cnn"), 0.5, TASK.example_input(1))
    assert model.conv.out_channels == 16 and model.fc1.in_features == 16 * 4 * 4
    assert model.fc2.out_features == 10
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("ratio", [1.0, 1.5, 0.999])
def test_structured_ratio_removing_everything_raises(small, ratio):
    model, _ = small
    with pytest.raises(CompressionError, match="ratio"):
        apply_structured(copy.deepcopy(model), ratio, TASK.example_input(1))


def test_structured_exclude_keeps_layer(small):
    model, _ = small
    pruned = apply_structured(copy.deepcopy(model), 0.5, TASK.example_input(1), exclude=["1"])
    assert [m.out_features for _, m in prunable_layers(pruned)] == [256, 128, 10]
    with pytest.raises(CompressionError, match="nope"):
        apply_structured(copy.deepcopy(model), 0.5, TASK.example_input(1), exclude=["nope"])


class Residual(nn.Module):
    """fc1 and fc2 share one width through the residual add: they prune together or not."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 16)
        self.fc3, self.out = nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = self.fc1(x)
        h = h + self.fc2(torch.relu(h))
        return self.out(torch.relu(self.fc3(h)))


def test_structured_exclude_of_a_coupled_layer_raises_instead_of_pruning_nothing():
    with pytest.raises(CompressionError, match=r"layer 'fc1' .* excluded layer\(s\) \['fc2'\]"):
        apply_structured(Residual(), 0.5, torch.randn(2, 8), exclude=["fc2"])
    both = apply_structured(Residual(), 0.5, torch.randn(2, 8), exclude=["fc1", "fc2"])
    assert (both.fc1.out_features, both.fc3.out_features) == (16, 8)  # the rest is pruned


def test_cubic_sparsity_schedule():
    values = [cubic_sparsity(t, 100, 0.8, begin_step=10) for t in range(0, 130)]
    assert values[0] == values[10] == 0.0
    assert values[60] == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert values[110] == values[129] == pytest.approx(0.8)
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert cubic_sparsity(5, 0, 0.5) == 0.5


def test_make_masks_deterministic_and_exact(small):
    model, _ = small
    first = make_masks(copy.deepcopy(model), 0.7)
    second = make_masks(copy.deepcopy(model), 0.7)
    assert first.keys() == second.keys() == {"1", "3", "5"}
    assert all(torch.equal(first[k], second[k]) for k in first)
    total = sum(m.numel() for m in first.values())
    assert sum(int((~m).sum()) for m in first.values()) == round(0.7 * total)


def test_gradual_pruner_reaches_target_and_keeps_zeros(small):
    model, splits = small
    pruner = GradualPruner(final_sparsity=0.8, total_steps=30, frequency=5)
    pruned = train(copy.deepcopy(model), splits.train, epochs=2, after_step=pruner.step)
    assert pruner.sparsity == pytest.approx(0.8)
    assert sparsity_report(pruned)["sparsity"] == pytest.approx(0.8, abs=0.005)
    for name, mask in pruner.masks.items():
        assert not pruned.get_submodule(name).weight[~mask].any()
    assert evaluate_accuracy(pruned, splits.test) > 0.9
    assert isinstance(pruned[1], nn.Linear)
