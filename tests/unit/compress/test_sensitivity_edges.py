"""The float fallback's edges: a drop exactly at the budget fits it (at the fully quantized
model, during bisection and at the end), what it reports is the drop measured for the
layers it chose (and 0 for all of them in float, the dense model, never measured), and a
miss at every measured count still ends at every layer in float. The sensitivity scan
measures only the layers asked for, and a bad setting says which value is wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from accelab.compress.errors import CompressionError
from accelab.compress.sensitivity import Fallback, Setting, fallback_search, layer_sensitivity
from accelab.stats import Estimate

RANKING = [f"l{i}" for i in range(8)]


def drops(table: dict[int, float]):
    """A measurement from a table: the drop with the first ``k`` layers in float."""
    return lambda layers: table[len(layers)]


def test_a_fully_quantized_model_exactly_at_the_budget_needs_no_fallback():
    found = fallback_search(RANKING, drops({0: 0.02}), budget=0.02)
    assert found == Fallback([], 0.02, True, [(0, 0.02)])


def test_a_bisection_step_exactly_at_the_budget_passes_and_its_drop_is_reported():
    table = {0: 0.5, 4: 0.01, 2: 0.02, 1: 0.04}  # the bisection: 4 passes, 2 passes, 1 fails
    found = fallback_search(RANKING, drops(table), budget=0.02)
    assert found == Fallback(RANKING[:2], 0.02, True, sorted(table.items()))


def test_missing_the_budget_at_every_count_falls_back_to_every_layer():
    table = {k: 0.5 for k in range(8)}
    found = fallback_search(RANKING, drops(table), budget=0.02)
    assert found.float_layers == RANKING and found.drop == 0.0 and found.met
    assert [k for k, _ in found.steps] == [0, 4, 6, 7]


def test_the_scan_measures_only_the_layers_asked_for():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)).eval()
    seen = []

    def drop_of(compressed):
        seen.append([type(m).__name__ for m in compressed])
        return Estimate(0.0, 0.0, 0.0, 1)

    rows = layer_sensitivity(model, [Setting("quant", 8)], drop_of, layers=["2"])
    assert [r.layer for r in rows] == ["2"]
    assert seen == [["Linear", "ReLU", "FakeQuantLinear"]]


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [("quant", 9, "bits must be an integer in 2..8, got 9"),
     ("quant", 4.5, "bits must be an integer in 2..8, got 4.5"),
     ("prune", 1.5, r"sparsity must be in \(0, 1\), got 1.5")],
)  # fmt: skip
def test_a_bad_setting_says_which_value(kind, value, message):
    with pytest.raises(CompressionError, match=message):
        Setting(kind, value)
