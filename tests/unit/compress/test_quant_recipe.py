"""The per-layer quantization recipe: which layers it names, and that a layer it keeps in
float stays a plain float module in every torch path (fake-quant, int8 dynamic, int8 FX)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from accelab.compress.quant import convert_int8_dynamic, convert_int8_static, prepare_fake_quant
from accelab.compress.recipe import float_layers, resolve, unmatched, with_float

NAMES = ["enc.0", "enc.1", "head"]


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 4))  # fmt: skip


def test_exact_name_beats_patterns_and_first_pattern_wins():
    recipe = {"enc.*": 4, "*": None, "enc.1": None}
    assert resolve(NAMES, 8, recipe) == {"enc.0": 4, "enc.1": None, "head": None}
    assert resolve(NAMES, 8, {}) == dict.fromkeys(NAMES, 8)
    assert float_layers(NAMES, {"enc.*": None, "head": 8}) == ["enc.0", "enc.1"]


def test_unmatched_keys_are_reported():
    assert unmatched(NAMES, {"enc.*": None, "dec.*": 4, "head": None, "hed": 8}) == ["dec.*", "hed"]


def test_with_float_overrides_a_pattern():
    assert resolve(NAMES, 8, with_float({"*": 4}, ["head"]))["head"] is None


def test_fake_quant_leaves_float_layer_and_sets_per_layer_bits():
    model = prepare_fake_quant(mlp(), 8, recipe={"3": None, "5": 4})
    assert type(model[3]) is nn.Linear
    assert model[1].bits == 8 and model[5].bits == 4


def test_fake_quant_rejects_bad_per_layer_bits():
    from accelab.compress.errors import CompressionError

    with pytest.raises(CompressionError, match="2..8"):
        prepare_fake_quant(mlp(), 8, recipe={"3": 16})


def test_int8_dynamic_keeps_float_layer():
    model = convert_int8_dynamic(mlp(), {"3": None})
    assert type(model[3]) is nn.Linear
    assert type(model[1]) is not nn.Linear and type(model[5]) is not nn.Linear


def test_int8_static_keeps_float_layer():
    model = convert_int8_static(mlp(), [torch.randn(8, 8)], {"3": None})
    quantized = {n for n, m in model.named_children() if "quantized" in type(m).__module__}
    assert type(model.get_submodule("3.0")) is nn.Linear  # fused with its ReLU, not quantized
    assert quantized == {"1", "5"}
