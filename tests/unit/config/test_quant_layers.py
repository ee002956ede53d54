"""``compression.quant.layers`` / ``fallback``: the schema reads ``float`` as null, and
pre-flight names a layer the model does not have, or a recipe that cannot run as written."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from accelab.config.schema import ExperimentConfig, QuantConfig
from accelab.preflight import model_errors, training_errors

MLP = {"name": "digits", "model": "mlp", "model_args": {"hidden": [16, 16]}}  # layers 1, 3, 5


def cfg(**quant) -> ExperimentConfig:
    return ExperimentConfig(trainable=MLP, compression={"quant": {"bits": 8, **quant}})


def test_float_word_and_null_both_keep_float():
    q = QuantConfig(bits=8, layers={"1": "float", "5": None, "3": 8})
    assert q.layers == {"1": None, "5": None, "3": 8}
    assert q.ort_recipe["layers"] == (("1", None), ("5", None), ("3", 8))


@pytest.mark.parametrize("value", [16, 1, "fp16"])
def test_bad_layer_bits_rejected(value):
    with pytest.raises(ValidationError, match="layers"):
        QuantConfig(layers={"1": value})


def test_unknown_layer_named_in_preflight():
    problems = model_errors(cfg(layers={"1": None, "fc*": None, "9": 4}))
    assert problems == [
        "compression.quant.layers: no such layer ['fc*', '9']; layers are ['1', '3', '5']"
    ]
    assert model_errors(cfg(layers={"[13]": None, "5": 8})) == []


def test_recipe_that_cannot_run_as_written():
    assert training_errors(cfg(layers={"1": 4})) == [
        "compression.quant.layers: ['1'] ask for bits other than compression.quant.bits (8), "
        "which only simulation runs: set compression.quant.real_kernel: false or keep those "
        "layers in float"
    ]
    assert training_errors(cfg(layers={"1": 4}, real_kernel=False)) == []
    none = ExperimentConfig(trainable=MLP, compression={"quant": {"fallback": "auto"}})
    assert training_errors(none) == []  # bits 32: nothing to do (a sweep may cross them)
    openvino = {"targets": [{"runtime": "torch"}, {"runtime": "openvino"}]}
    assert training_errors(cfg(bits=4, layers={"1": None})) == []  # MatMulNBits excludes it
    for quant in ({"layers": {"1": None}}, {"fallback": "auto"}):  # NNCF's ignored_scope
        for bits in (8, 4):
            with_ov = cfg(bits=bits, **quant)
            with_ov.measure = openvino  # validated on assignment
            assert training_errors(with_ov) == []
