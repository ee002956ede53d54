"""Pruning's rules on tiny untrained models with weights the test sets (no training,
milliseconds; the mutation group ``prune`` runs these per mutant): which weights a
sparsity zeroes (global, per layer, a recipe's own), which layers count and which are
excluded, the gradual schedule and when it updates, which channels structured pruning may
remove, and the sparsity read back from the weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from accelab.compress.errors import CompressionError
from accelab.compress.prune import (
    GradualPruner,
    apply_masks,
    apply_structured,
    apply_unstructured,
    check_layer_names,
    cubic_sparsity,
    layer_sparsity,
    make_masks,
    prunable_layers,
    sparsity_report,
    split_by_recipe,
    structured_ratios,
    structured_targets,
)


def net() -> nn.Sequential:
    """fc "0": weights 1..8 (2x4), fc "2": weights -1..-6 x 10 (3x2), biases 0.5."""
    model = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(1.0, 9.0).reshape(2, 4))
        model[2].weight.copy_(-10 * torch.arange(1.0, 7.0).reshape(3, 2))
        model[0].bias.fill_(0.5)
        model[2].bias.fill_(0.5)
    return model


def zeros(model: nn.Module) -> dict[str, list[int]]:
    """Per layer, the flat indices of its zero weights."""
    return {
        n: torch.nonzero(m.weight.detach().reshape(-1) == 0).reshape(-1).tolist()
        for n, m in prunable_layers(model)
    }


def test_prunable_layers_in_order_and_exclude_covers_submodules_only():
    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Sequential(nn.Linear(2, 2), nn.Conv2d(1, 1, 1))
            self.fc10, self.emb = nn.Linear(2, 2), nn.Embedding(3, 2)

    model = Nested()
    assert [n for n, _ in prunable_layers(model)] == ["fc1.0", "fc1.1", "fc10"]
    assert [n for n, _ in prunable_layers(model, ["fc1"])] == ["fc10"]  # not fc10
    assert [n for n, _ in prunable_layers(model, ["fc1.1"])] == ["fc1.0", "fc10"]
    assert check_layer_names(model, ["fc1", "fc1.0", "", "fc2", "fc1.0.weight"]) == [
        "", "fc2", "fc1.0.weight"
    ]  # fmt: skip


def test_bad_arguments_are_refused_saying_which():
    with pytest.raises(CompressionError, match=r"unknown layer names in exclude: \['x'\]"):
        apply_unstructured(net(), 0.5, exclude=["x"])
    with pytest.raises(CompressionError, match="no Linear or Conv2d layers left to prune"):
        apply_unstructured(net(), 0.5, exclude=["0", "2"])
    for bad in (-0.1, 1.1):
        with pytest.raises(CompressionError, match=rf"sparsity must be in \[0, 1\], got {bad}"):
            make_masks(net(), bad)
    with pytest.raises(CompressionError, match="scope must be 'global' or 'layer', got 'all'"):
        apply_unstructured(net(), 0.5, scope="all")
    with pytest.raises(CompressionError, match="scope must be 'global' or 'layer', got 'all'"):
        make_masks(net(), 0.5, scope="all")
    with pytest.raises(CompressionError, match=r"sparsity of layer '2' must be in \[0, 1\]"):
        split_by_recipe(prunable_layers(net()), {"2": 1.5})


def test_a_recipe_splits_the_layers_it_names_with_their_own_sparsity():
    layers = prunable_layers(net())
    own, rest = split_by_recipe(layers, {"2": 1, "9": 0.5})
    assert [(n, s) for n, _, s in own] == [("2", 1.0)] and isinstance(own[0][2], float)
    assert [n for n, _ in rest] == ["0"]
    own, rest = split_by_recipe(layers, {"*": 0.0})
    assert [n for n, _, _ in own] == ["0", "2"] and rest == []


def test_global_sparsity_zeroes_the_smallest_weights_of_all_layers_together():
    # 14 weights, 0.5 -> 7 zeroed: 1..7 of layer 0 (layer 2's are all >= 10 in magnitude)
    model = apply_unstructured(net(), 0.5)
    assert zeros(model) == {"0": [0, 1, 2, 3, 4, 5, 6], "2": []}
    assert isinstance(model[0].weight, nn.Parameter) and not hasattr(model[0], "weight_mask")
    masks = make_masks(net(), 0.5)
    assert {n: torch.nonzero(~m.reshape(-1)).reshape(-1).tolist() for n, m in masks.items()} == (
        zeros(model)
    )


def test_layer_scope_zeroes_the_same_fraction_of_each_layer():
    model = apply_unstructured(net(), 0.5, scope="layer")
    assert zeros(model) == {"0": [0, 1, 2, 3], "2": [0, 1, 2]}
    masks = make_masks(net(), 0.5, scope="layer")
    assert [int((~m).sum()) for m in masks.values()] == [4, 3]
    assert masks["2"].shape == (3, 2)


def test_a_recipe_layer_is_ranked_inside_itself_and_the_rest_globally():
    model = apply_unstructured(net(), 0.25, recipe={"2": 0.5})  # layer 2: 3 of 6
    assert zeros(model) == {"0": [0, 1], "2": [0, 1, 2]}  # layer 0: 0.25 of its 8 alone
    model = apply_unstructured(net(), 0.25, scope="layer", recipe={"0": 0.0})
    assert zeros(model) == {"0": [], "2": [0, 1]}  # round(0.25 * 6) = 2 (banker's: 1.5 -> 2)
    masks = make_masks(net(), 0.25, recipe={"2": 0.5})
    assert [int((~m).sum()) for m in masks.values()] == [3, 2]  # own first, then the rest
    assert make_masks(net(), 0.5, recipe={"*": 0.5}).keys() == {"0", "2"}


def test_masks_keep_ties_stable_and_zero_nothing_at_zero():
    model = nn.Sequential(nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[2.0, -1.0, 1.0, 1.0]]))
    assert make_masks(model, 0.5)["0"].tolist() == [[True, False, False, True]]  # first ties
    assert make_masks(model, 0.0)["0"].all()
    assert apply_masks(model, make_masks(model, 0.5))[0].weight.tolist() == [[2.0, 0, 0, 1.0]]


def test_the_cubic_schedule_with_an_initial_sparsity_and_no_length():
    assert cubic_sparsity(0, 10, 0.9, initial=0.2) == pytest.approx(0.2)
    assert cubic_sparsity(5, 10, 0.9, initial=0.2) == pytest.approx(0.9 - 0.7 * 0.5**3)
    assert cubic_sparsity(3, 10, 0.9, begin_step=5) == 0.0  # before the start: initial
    assert cubic_sparsity(99, 10, 0.9) == pytest.approx(0.9)
    assert cubic_sparsity(4, 0, 0.5, initial=0.1, begin_step=5) == 0.1
    assert cubic_sparsity(5, 0, 0.5, initial=0.1, begin_step=5) == 0.5


def test_a_gradual_pruner_updates_on_its_steps_and_at_the_end():
    p = GradualPruner(final_sparsity=0.5, total_steps=10, begin_step=2, frequency=4)
    assert [s for s in range(16) if p.is_update_step(s)] == [2, 6, 10, 12]
    assert [s for s in range(5) if GradualPruner(0.5, 3, frequency=0).is_update_step(s)] == [
        0, 1, 2, 3
    ]  # fmt: skip
    assert GradualPruner(0.5, 10, initial_sparsity=0.9).scheduled(0, 0.5) == 0.5  # capped


def test_a_gradual_pruner_masks_on_update_steps_and_reapplies_in_between():
    p = GradualPruner(final_sparsity=0.5, total_steps=4, frequency=2, scope="layer",
                      layers=(("2", 1.0 / 3),))  # fmt: skip
    model = net()
    assert p.step(model, 1) == pytest.approx(0.5 - 0.5 * 0.75**3)  # no masks yet: rebuilt
    first = {k: v.clone() for k, v in p.masks.items()}
    with torch.no_grad():
        model[0].weight.fill_(7.0)  # an optimizer step writes the zeroed weights back
    p.step(model, 3)  # not an update step: the same masks, applied again
    assert all(torch.equal(first[k], p.masks[k]) for k in first)
    assert int((model[0].weight == 0).sum()) == int((~first["0"]).sum())
    assert p.step(model, 4) == pytest.approx(0.5)  # the end: the final sparsity
    assert int((~p.masks["0"]).sum()) == 4 and int((~p.masks["2"]).sum()) == 2
    assert p.sparsity == pytest.approx(0.5)


def mlp3() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))


def test_structured_targets_skip_the_output_layer_excluded_and_unnamed_suffixes():
    assert [n for n, _ in structured_targets(mlp3())] == ["0", "2"]
    assert [n for n, _ in structured_targets(mlp3(), exclude=["0"])] == ["2"]
    assert [n for n, _ in structured_targets(mlp3(), only=["2", "4"])] == ["2"]


def test_structured_ratios_per_layer_and_a_ratio_that_keeps_nothing_is_refused():
    targets = structured_targets(mlp3())
    assert structured_ratios(targets, 0.5, {"2": 0.25}) == {"0": 0.5, "2": 0.25}
    assert structured_ratios(targets, 0.5) == {"0": 0.5, "2": 0.5}
    msg = r"ratio 0.9 would remove every output channel of layer '2' \(6 channels\); use a " \
          r"ratio of at most 0.8333"  # fmt: skip
    with pytest.raises(CompressionError, match=msg):
        structured_ratios(targets, 0.5, {"2": 0.9})  # int(6 * 0.1) = 0 channels
    structured_ratios(targets, 0.5, {"2": 0.8})  # int(6 * 0.2) = 1 channel: allowed
    with pytest.raises(CompressionError, match=r"must be in \[0, 1\), got 1.0"):
        structured_ratios(targets, 1.0)


def test_structured_pruning_removes_each_layers_share_of_channels():
    model = apply_structured(mlp3(), 0.5, torch.zeros(1, 4), recipe={"2": 0.5 + 1 / 6})
    assert [m.out_features for _, m in prunable_layers(model)] == [4, 2, 2]
    assert model(torch.zeros(3, 4)).shape == (3, 2)
    same = mlp3()
    assert apply_structured(same, 0.0, torch.zeros(1, 4)) is same
    assert [m.out_features for _, m in prunable_layers(same)] == [8, 6, 2]  # nothing removed
    with pytest.raises(CompressionError, match="no layer whose outputs may be removed"):
        apply_structured(mlp3(), 0.5, torch.zeros(1, 4), only=["9"])
    with pytest.raises(CompressionError, match=r"structured pruning ratio must be in \[0, 1\)"):
        apply_structured(mlp3(), -0.5, torch.zeros(1, 4))


def test_structured_pruning_leaves_embeddings_and_norms_alone():
    class Embedded(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.norm = nn.Embedding(5, 8), nn.LayerNorm(8)
            self.fc, self.out = nn.Linear(8, 8), nn.Linear(8, 5)

        def forward(self, x):
            return self.out(torch.relu(self.fc(self.norm(self.emb(x)))))

    model = apply_structured(Embedded(), 0.5, torch.zeros(1, 3, dtype=torch.long))
    assert (model.emb.embedding_dim, model.norm.normalized_shape) == (8, (8,))
    assert (model.fc.in_features, model.fc.out_features) == (8, 4)


def test_layer_sparsity_counts_removed_weights_against_the_dense_model():
    dense = mlp3()
    pruned = apply_structured(mlp3(), 0.5, torch.zeros(1, 4))
    with torch.no_grad():
        pruned[4].weight[0, 0] = 0.0
    assert layer_sparsity(pruned, dense) == pytest.approx(
        {"0": 0.5, "2": 1 - 12 / 48, "4": 1 - 5 / 12}
    )
    assert layer_sparsity(pruned) == pytest.approx({"0": 0.0, "2": 0.0, "4": 1 / 6})
    assert list(layer_sparsity(pruned, dense, exclude=["2"])) == ["0", "4"]


def test_the_sparsity_report_reads_the_weights():
    model = apply_unstructured(net(), 0.5)
    with torch.no_grad():
        model[2].bias[0] = 0.0
    assert sparsity_report(model) == {
        "params": 14 + 5, "nonzero_params": 14 + 5 - 7 - 1, "prunable_params": 14,
        "prunable_zeros": 7, "sparsity": 0.5,
    }  # fmt: skip
    assert sparsity_report(model, exclude=["0"])["sparsity"] == 0.0
    assert sparsity_report(nn.Sequential(nn.ReLU()))["sparsity"] == 0.0
