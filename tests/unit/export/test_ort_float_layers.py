"""Layers a per-layer recipe keeps in float are left out of ONNX Runtime's int8 quantizer
(``nodes_to_exclude``): their weight stays a float initializer read by a float op."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from accelab.export.onnx import ExportError, OrtRecipe, quantize, quantize_int4, to_onnx

torch.manual_seed(0)
MODEL = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
FP32 = to_onnx(MODEL, torch.randn(2, 8), "torchscript")
CALIB = [torch.randn(16, 8) for _ in range(2)]


def weight_users(model: bytes) -> dict[str, set[str]]:
    """Layer -> op types that read its (possibly transposed / quantized) weight."""
    graph = onnx.load_from_string(model).graph
    users: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            if ".weight" in name:
                users.setdefault(name.split(".weight")[0], set()).add(
                    node.op_type + ("(int8)" if "quantized" in name else "")
                )
    return users


@pytest.mark.parametrize("scheme", ["dynamic", "static"])
def test_float_layer_stays_float(scheme):
    recipe = OrtRecipe(layers=(("2", None),))
    users = weight_users(quantize(FP32, scheme, CALIB, recipe))
    assert not any("int8" in op for op in users["2"]), users
    assert all(any("int8" in op for op in users[name]) for name in ("0", "4")), users
    assert recipe.suffix == "-float-2"


def test_unknown_float_layer_is_an_export_error():
    with pytest.raises(ExportError, match="no weight of such a layer"):
        quantize(FP32, "dynamic", recipe=OrtRecipe(layers=(("fc9", None),)))


def test_a_float_layer_that_was_quantized_anyway_is_caught():
    from accelab.export.onnx import check_float

    uniform = onnx.load_from_string(quantize(FP32, "dynamic"))
    check_float(uniform, [])
    with pytest.raises(ExportError, match=r"quantized layers kept in float: \['2'\]"):
        check_float(uniform, ["2"])


def test_int4_float_layer_stays_a_float_matmul():
    users = weight_users(quantize_int4(FP32, 16, {"2": None}))
    assert users["2"] == {"MatMul"}, users
    assert users["0"] == {"MatMulNBits"} and users["4"] == {"MatMulNBits"}, users


def test_backend_names_the_float_layers():
    from accelab.config.schema import ExperimentConfig
    from accelab.variant.targets import ort_backend

    for bits, name in ((8, "ort-int8-dynamic-float-2"), (4, "ort-int4-weight-only-b32-float-2")):
        cfg = ExperimentConfig(compression={"quant": {"bits": bits, "layers": {"2": None}}})
        assert ort_backend(cfg) == name
