"""Per-layer sensitivity and the automatic float fallback, on a small MLP with one layer
made fragile on purpose: layer "2" reads a hidden unit that is always zero through a huge
weight. In float that weight changes nothing; quantized per output channel at 4 bits, its
scale rounds every other weight of the layer to zero. That layer must rank first, and be
the one (and only one) the fallback keeps in float."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from accelab.compress.quant import prepare_fake_quant
from accelab.compress.recipe import with_float
from accelab.compress.sensitivity import (
    Setting,
    compress_only,
    fallback_search,
    layer_sensitivity,
)
from accelab.stats import paired_proportion_drop


def fragile_mlp() -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 4)).eval()  # fmt: skip
    with torch.no_grad():
        model[0].weight[0].zero_()
        model[0].bias[0] = -1.0  # hidden unit 0 is always 0 after the ReLU
        model[2].weight[:, 0] = 1000.0  # ... and layer 2 reads it through a huge weight
    x = torch.randn(512, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels: the float model is right on every example
    return model, x, y


def drop_of_factory(x, y):
    def correct(model):
        with torch.no_grad():
            return (model(x).argmax(1) == y).tolist()

    base = [True] * len(y)
    return lambda model: paired_proportion_drop(base, correct(model))


def test_setting_checks_its_value():
    from accelab.compress.errors import CompressionError

    for kind, value in (("quant", 16), ("quant", 1), ("prune", 1.0), ("prune", 0.0)):
        with pytest.raises(CompressionError):
            Setting(kind, value)
    assert Setting("quant", 4).label == "int4" and Setting("prune", 0.9).label == "sparsity0.9"


def test_compress_only_touches_one_layer():
    model, _, _ = fragile_mlp()
    quantized = compress_only(model, "2", Setting("quant", 4))
    assert [type(m).__name__ for m in quantized] == [
        "Linear", "ReLU", "FakeQuantLinear", "ReLU", "Linear"]  # fmt: skip
    pruned = compress_only(model, "4", Setting("prune", 0.5))
    assert float((pruned[4].weight == 0).float().mean()) == 0.5
    assert int((pruned[0].weight == 0).sum()) == 8  # only the row zeroed above
    assert type(model[2]) is nn.Linear  # the input model is not changed


def test_fragile_layer_ranks_first():
    model, x, y = fragile_mlp()
    settings = [Setting("quant", 4), Setting("prune", 0.5)]
    rows = layer_sensitivity(model, settings, drop_of_factory(x, y))
    assert len(rows) == 6
    assert (rows[0].layer, rows[0].setting) == ("2", Setting("quant", 4))
    assert rows[0].drop.value > 0.3 and rows[0].drop.lo > 0  # measurably broken
    assert [r.drop.value for r in rows] == sorted((r.drop.value for r in rows), reverse=True)


def test_fallback_keeps_only_the_fragile_layer_in_float():
    model, x, y = fragile_mlp()
    drop_of = drop_of_factory(x, y)
    ranking = [r.layer for r in layer_sensitivity(model, [Setting("quant", 4)], drop_of)]

    def drop_with_float(layers):
        quantized = prepare_fake_quant(copy.deepcopy(model), 4, recipe=with_float({}, layers))
        return drop_of(quantized).value

    found = fallback_search(ranking, drop_with_float, budget=0.05)
    assert found.float_layers == ["2"] and found.met
    assert found.drop <= 0.05
    assert [k for k, _ in found.steps] == [0, 1]  # all quantized misses, one in float fits


@pytest.mark.parametrize("needed", [0, 1, 3, 5, 8, 13, 16])
def test_fallback_bisects_to_the_fewest_layers(needed):
    ranking = [f"l{i}" for i in range(16)]
    calls = []

    def drop_with_float(layers):
        calls.append(len(layers))
        return 0.0 if len(layers) >= needed else 0.1 * (needed - len(layers))

    found = fallback_search(ranking, drop_with_float, budget=0.01)
    assert found.float_layers == ranking[:needed]
    assert len(calls) <= 1 + 4  # the fully quantized model, then log2(16) bisection steps
    assert len(set(calls)) == len(calls)  # nothing measured twice
    assert 16 not in calls  # every layer in float is the dense model: never measured
