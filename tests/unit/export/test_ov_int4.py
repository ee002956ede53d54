"""bits 4 on OpenVINO: NNCF int4 weight compression really stores every Linear's weight as
uint4 (one scale and zero point per group, the group size honoured and named in the
backend), the outputs stay within a 4-bit tolerance of torch, the IR is smaller than the
f32 one, and it is a real kernel (not simulated). A per-layer recipe's float layers stay
float in the OpenVINO graph, for int4 and for NNCF int8 (``ignored_scope``), and the
backend says so."""

from __future__ import annotations

import pytest
import torch

from accelab.backends import DESCRIPTIONS, OV_INT4
from accelab.config.schema import ExperimentConfig
from accelab.export.onnx import ExportError, to_onnx
from accelab.export.openvino import (
    check_float,
    compress_int4,
    float_ops,
    from_onnx,
    layer_ops,
    quantize_int8,
    serialized_size,
    weight_types,
)
from accelab.variant.targets import Exports, build_on, strip_for_export
from tests.helpers_torch import assert_int4_close, trained_mlp
from trainables.digits import TASK

pytest.importorskip("openvino")
pytest.importorskip("nncf")

HIDDEN = (64, 32)  # three Linear layers ("1", "3", "5"): 64 -> 64 -> 32 -> 10
LAYERS = ["1", "3", "5"]


@pytest.fixture(scope="module")
def trained():
    model, splits = trained_mlp(HIDDEN)
    return model.eval(), splits


@pytest.fixture(scope="module")
def fp32(trained):
    return from_onnx(to_onnx(trained[0], TASK.example_input(2)))


def cfg(bits: int = 4, **quant) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": list(HIDDEN)}},
        "compression": {"quant": {"bits": bits, **quant}},
        "measure": {"targets": [{"runtime": "openvino"}]},
    })  # fmt: skip


def constants(model) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Constant name -> (element type, shape) of an ``openvino.Model``."""
    return {
        op.get_friendly_name(): (op.get_output_element_type(0).get_type_name(),
                                 tuple(op.get_output_shape(0)))
        for op in model.get_ordered_ops() if op.get_type_name() == "Constant"
    }  # fmt: skip


def element_types(model, fp32) -> dict[str, str]:
    """accelab layer -> the element type its weight is stored as in ``model`` (the op
    names come from the f32 model: NNCF keeps them, int8 renames the weight constants)."""
    types = weight_types(model)
    return {layer: types[ops[0]] for layer, ops in layer_ops(fp32).items()}


def fake_quantized(model) -> set[str]:
    """Names of the ops whose activation input passes through a FakeQuantize (int8)."""
    out = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() == "MatMul":
            source = op.input(0).get_source_output().get_node()
            while source.get_type_name() == "Reshape":
                source = source.input(0).get_source_output().get_node()
            if source.get_type_name() == "FakeQuantize":
                out.add(op.get_friendly_name())
    return out


def test_every_weight_is_uint4_with_a_group_wise_scale_and_zero_point(fp32):
    before = constants(fp32)
    model = compress_int4(fp32, group_size=32)
    assert element_types(fp32, fp32) == dict.fromkeys(LAYERS, "f32")  # the input is not changed
    assert element_types(model, fp32) == dict.fromkeys(LAYERS, "u4")
    c = constants(model)
    for layer in LAYERS:
        out, k = before[f"{layer}.weight"][1]  # [out, in]: grouped along the input channels
        assert c[f"{layer}.weight"] == ("u4", (out, k // 32, 32))
        assert c[f"{layer}.weight/zero_point"] == ("u4", (out, k // 32, 1))
        assert c[f"{layer}.weight/scale"][1] == (out, k // 32, 1)
    # no float weight matrix is left
    assert not [n for n, (t, s) in c.items() if t == "f32" and len(s) == 2 and s[0] > 1]


@pytest.mark.parametrize("group_size", [16, 32])
def test_group_size_is_honoured(fp32, group_size):
    c = constants(compress_int4(fp32, group_size))
    assert c["1.weight"][1] == (64, 64 // group_size, group_size)


def test_outputs_close_to_torch_and_quality_is_real(trained, fp32):
    model, splits = trained
    x, y = splits.test.tensors
    built = build_on("openvino", model, cfg(), TASK, Exports(strip_for_export(model)), x)
    ours = built.runner(x)
    assert_int4_close(model, x, y, ours)


def test_build_on_names_the_backend_builds_once_and_is_smaller(trained):
    model, splits = trained
    test = splits.test.tensors[0]
    exports = Exports(strip_for_export(model))
    g32 = build_on("openvino", model, cfg(), TASK, exports, test)
    g16 = build_on("openvino", model, cfg(block_size=16), TASK, exports, test)
    again = build_on("openvino", model, cfg(), TASK, exports, test)
    hint = "" if g32.runner.inference_precision == "f32" else f"+{g32.runner.inference_precision}"
    assert g32.backend == g32.runner.backend == f"{OV_INT4}-g32{hint}"
    assert g16.backend == f"{OV_INT4}-g16{hint}" and OV_INT4 in DESCRIPTIONS
    assert not g32.runner.simulated and g32.error is None
    assert again.runner.ov_model is g32.runner.ov_model
    assert sorted(k for k in exports.openvino if k != "fp32") == [("int4", 16, ()),
                                                                   ("int4", 32, ())]  # fmt: skip
    dense = build_on("openvino", model, cfg(32), TASK, exports, test)
    assert g32.runner.size_bytes() < dense.runner.size_bytes()  # the IR's graph text dominates


def test_the_serialized_ir_is_about_a_quarter_of_the_f32_one():
    wide = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 512), torch.nn.ReLU(),
                               torch.nn.Linear(512, 10)).eval()  # fmt: skip
    fp32 = from_onnx(to_onnx(wide, TASK.example_input(2)))
    dense, int4 = serialized_size(fp32), serialized_size(compress_int4(fp32, 32))
    # 38k weights: f32 ~154 kB of weights + 5 kB xml; int4 (u4 + an fp16 scale and a u4
    # zero point per 32) ~24 kB + 15 kB xml (the decompression subgraph): 0.24; int8 0.31
    assert int4 < 0.26 * dense


def test_a_group_size_that_does_not_divide_a_layer_is_the_targets_error(trained):
    model, splits = trained  # layer "5" has 32 input channels
    built = build_on("openvino", model, cfg(block_size=64), TASK,
                     Exports(strip_for_export(model)), splits.test.tensors[0])  # fmt: skip
    assert built.runner is None and "compression.quant.block_size: 64" in built.error


def test_int4_float_layer_stays_float_in_the_graph_and_is_named(trained, fp32):
    model, splits = trained
    compressed = compress_int4(fp32, 32, {"3": None})
    assert element_types(compressed, fp32) == {"1": "u4", "3": "f32", "5": "u4"}
    assert constants(compressed)["3.weight"] == ("f32", (32, 64))
    built = build_on("openvino", model, cfg(layers={"[3]": "float"}), TASK,
                     Exports(strip_for_export(model)), splits.test.tensors[0])  # fmt: skip
    assert built.backend.startswith(f"{OV_INT4}-g32-float-[3]")
    assert element_types(built.runner.ov_model, fp32) == {"1": "u4", "3": "f32", "5": "u4"}


def test_int8_float_layer_is_left_out_of_nncf_and_is_named(trained, fp32):
    model, splits = trained
    batches = [splits.train.tensors[0][:64]]
    everything = quantize_int8(fp32, batches, transformer=False)
    assert element_types(everything, fp32) == dict.fromkeys(LAYERS, "i8")
    (kept,) = layer_ops(fp32)["3"]
    assert kept in fake_quantized(everything)
    mixed = quantize_int8(fp32, batches, transformer=False, layers={"3": None})
    assert element_types(mixed, fp32) == {"1": "i8", "3": "f32", "5": "i8"}
    assert kept not in fake_quantized(mixed)  # its input is not quantized either
    built = build_on("openvino", model, cfg(8, layers={"3": None}), TASK,
                     Exports(strip_for_export(model)), splits.test.tensors[0])  # fmt: skip
    assert built.backend.startswith("openvino-int8-nncf-float-3")
    assert element_types(built.runner.ov_model, fp32) == {"1": "i8", "3": "f32", "5": "i8"}


def test_check_float_refuses_a_layer_that_was_quantized(trained, fp32):
    batches = [trained[1].train.tensors[0][:64]]
    three, one = float_ops(fp32, {"3": None}), float_ops(fp32, {"1": None})
    with pytest.raises(ExportError, match=r"\['3'\]"):
        check_float(quantize_int8(fp32, batches, transformer=False), three)
    with pytest.raises(ExportError, match=r"\['1'\]"):
        check_float(compress_int4(fp32, 32), one)
    check_float(fp32, float_ops(fp32, {"*": None}))  # the f32 model: every layer float


def test_a_float_key_with_no_layer_in_the_graph_is_refused(fp32):
    with pytest.raises(ExportError, match=r"compression\.quant\.layers: \['9'\]"):
        compress_int4(fp32, 32, {"9": None})


def test_nncf_prints_no_progress_bars_or_tables(fp32, trained, capsys):
    """NNCF draws progress bars on stdout and logs bit-width tables at INFO; in accelab's
    output they would land between its own progress lines."""
    quantize_int8(fp32, [trained[1].train.tensors[0][:64]], transformer=False)
    compress_int4(fp32, 16)
    out, err = capsys.readouterr()
    assert "━" not in out + err and "bitwidth" not in out + err, out + err
