"""bits 4 on ONNX Runtime: every Linear layer becomes a MatMulNBits node (block-wise int4
weights, no fp32 weight matrix left), the block size is honoured and named in the backend,
the outputs stay within a 4-bit tolerance of torch, the served ONNX is the int4 one, and
4 bits on torch CPU stays simulated."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from accelab.backends import SIMULATED
from accelab.config.loader import load_config
from accelab.config.schema import ExperimentConfig
from accelab.errors import ConfigError
from accelab.export.onnx import quantize_int4, session, to_onnx
from accelab.variant.targets import Exports, build_on, variant_onnx
from tests.helpers_torch import assert_int4_close, trained_mlp
from trainables.digits import TASK

HIDDEN = (64, 32)  # three Linear layers: 64 -> 64 -> 32 -> 10


@pytest.fixture(scope="module")
def trained():
    model, splits = trained_mlp(HIDDEN)
    return model.eval(), splits


def nodes(data: bytes) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    m = onnx.load_from_string(data)
    return list(m.graph.node), {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}


def cfg(bits: int = 4, **quant) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": list(HIDDEN)}},
        "compression": {"quant": {"bits": bits, **quant}},
        "measure": {"targets": [{"runtime": "onnxruntime"}]},
    })  # fmt: skip


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_every_linear_becomes_matmulnbits_and_no_fp32_weight_is_left(trained, exporter):
    model, _ = trained
    data = quantize_int4(to_onnx(model, TASK.example_input(2), exporter), block_size=32)
    graph, inits = nodes(data)
    ops = [n.op_type for n in graph]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert ops.count("MatMulNBits") == len(linears) == 3
    assert "Gemm" not in ops and "MatMul" not in ops
    float_matrices = [k for k, v in inits.items() if v.dtype == np.float32 and v.ndim == 2]
    assert all(k.endswith("_scales") for k in float_matrices), float_matrices
    packed = [v for k, v in inits.items() if k.endswith("_Q4")]
    assert len(packed) == 3 and all(v.dtype == np.uint8 for v in packed)


@pytest.mark.parametrize("block_size", [16, 32, 128])
def test_block_size_is_honoured(trained, block_size):
    model, _ = trained
    graph, inits = nodes(quantize_int4(to_onnx(model, TASK.example_input(2)), block_size))
    for node in (n for n in graph if n.op_type == "MatMulNBits"):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["block_size"] == block_size and attrs["bits"] == 4
        scales = inits[node.input[2]]  # one scale per block of input channels, per output
        assert scales.shape == (attrs["N"], -(-attrs["K"] // block_size))


def test_outputs_close_to_torch_and_quality_is_real(trained):
    model, splits = trained
    x, y = splits.test.tensors
    data = quantize_int4(to_onnx(model, TASK.example_input(2)), block_size=32)
    ours = torch.from_numpy(session(data).run(None, {"input": x.numpy()})[0])
    assert_int4_close(model, x, y, ours)


def test_build_on_names_the_backend_and_builds_each_block_size_once(trained):
    model, splits = trained
    test = splits.test.tensors[0]
    exports = Exports(model)
    b32 = build_on("onnxruntime", model, cfg(), TASK, exports, test)
    b64 = build_on("onnxruntime", model, cfg(block_size=64), TASK, exports, test)
    again = build_on("onnxruntime", model, cfg(), TASK, exports, test)
    assert b32.backend == "ort-int4-weight-only-b32" and b64.backend == "ort-int4-weight-only-b64"
    assert (
        not b32.runner.simulated
        and b32.onnx is again.onnx
        and sorted(exports.int4) == [(32, ()), (64, ())]
    )
    assert [n.op_type for n in nodes(b32.onnx)[0]].count("MatMulNBits") == 3
    assert b32.runner.size_bytes() < 0.5 * len(exports.fp32)  # small: graph text counts
    with torch.inference_mode():
        assert (b32.runner(test[:64]) - model(test[:64])).abs().max().item() < 1.0


def test_four_bits_on_torch_cpu_stays_simulated(trained):
    model, splits = trained
    built = build_on("torch", model, cfg(), TASK, Exports(model), splits.test.tensors[0])
    assert built.backend == SIMULATED and built.runner.simulated


def test_the_served_onnx_of_a_4bit_variant_is_the_matmulnbits_one(trained):
    model, _ = trained
    variant = SimpleNamespace(targets={}, float_model=model)
    data, backend, _ = variant_onnx(variant, cfg(block_size=16), TASK)
    assert backend == "ort-int4-weight-only-b16"
    assert [n.op_type for n in nodes(data)[0]].count("MatMulNBits") == 3


@pytest.mark.parametrize("value", ["24", "8", "48"])
def test_bad_block_size_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"compression\.quant\.block_size"):
        load_config("configs/digits_mlp.yaml", ["compression.quant.bits=4",
                                                f"compression.quant.block_size={value}"])  # fmt: skip
