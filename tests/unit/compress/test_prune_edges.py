"""Edges of ``accelab.compress.prune`` that its mutation group found untested (issue #18):
one weight zeroed, ties among many equal weights, a one-step schedule, a schedule and update
steps that start late, a structured ratio other than torch-pruning's default, which channel
the L2 magnitude removes, and error messages that name what was wrong. Tiny untrained models
with weights the test sets: milliseconds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from accelab.compress.errors import CompressionError
from accelab.compress.prune import (
    GradualPruner,
    apply_structured,
    apply_unstructured,
    cubic_sparsity,
    make_masks,
    prunable_layers,
    structured_ratios,
    structured_targets,
)


def linear(weights: list[float]) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(len(weights), 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([weights]))
    return model


def test_a_sparsity_that_zeroes_one_weight_zeroes_it():
    assert make_masks(linear([3.0, 1.0, 2.0, 4.0]), 0.25)["0"].tolist() == [
        [True, False, True, True]
    ]  # fmt: skip


def test_ties_among_many_equal_weights_go_to_the_first_ones():
    """100 equal weights (past the size where an unstable sort reorders ties): the masks
    are the same on every run and zero the first 25."""
    mask = make_masks(linear([1.0] * 100), 0.25)["0"].reshape(-1)
    assert mask.tolist() == [False] * 25 + [True] * 75


def test_a_one_step_schedule_starts_at_the_initial_sparsity():
    assert cubic_sparsity(5, 1, 0.5, initial=0.1, begin_step=5) == pytest.approx(0.1)
    assert cubic_sparsity(6, 1, 0.5, initial=0.1, begin_step=5) == pytest.approx(0.5)


def test_a_pruner_that_begins_late_schedules_and_updates_from_its_begin_step():
    p = GradualPruner(final_sparsity=0.5, total_steps=10, begin_step=1, frequency=4)
    assert p.scheduled(1, 0.5) == 0.0 and p.scheduled(6, 0.5) == pytest.approx(0.5 - 0.5 / 8)
    assert [s for s in range(14) if p.is_update_step(s)] == [1, 5, 9, 11]


def test_errors_name_the_sparsity_and_the_layer():
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(CompressionError, match=r"^sparsity must be in \[0, 1\], got 1.5$"):
        apply_unstructured(model, 1.5)
    with pytest.raises(
        CompressionError, match="^model has no Linear or Conv2d layers left to prune$"
    ):
        apply_unstructured(model, 0.5, exclude=["0"])
    targets = structured_targets(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)))
    with pytest.raises(
        CompressionError, match=r"^structured pruning ratio of layer '0' must be in \[0, 1\)"
    ):
        structured_ratios(targets, 1.0)
    with pytest.raises(
        CompressionError, match="^structured pruning: no layer whose outputs may be removed$"
    ):
        apply_structured(nn.Sequential(nn.Linear(4, 2)), 0.5, torch.zeros(1, 4))


def test_a_structured_ratio_of_a_quarter_removes_a_quarter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    apply_structured(model, 0.25, torch.zeros(1, 4))
    assert [m.out_features for _, m in prunable_layers(model)] == [6, 3, 2]


def test_structured_pruning_removes_the_channel_of_smallest_l2_norm():
    """Channel 0: four weights of 1 (squares sum to 4, cubes to 4); channel 1: one of 1.9
    (3.61; 6.86): the L2 magnitude removes channel 1, an L3 one would remove channel 0."""
    model = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.9, 0.0, 0.0, 0.0]]))
        model[0].bias.zero_()
        model[2].weight.fill_(1.0)
    apply_structured(model, 0.5, torch.zeros(1, 4))
    assert model[0].weight.tolist() == [[1.0, 1.0, 1.0, 1.0]]
