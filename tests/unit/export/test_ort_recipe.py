"""ONNX Runtime quantization recipes: ORT's own defaults are one of them (the graph that
``quantize_dynamic``/``quantize_static`` make with default arguments), per-channel vs
per-tensor weight scales, activation type, op types, and the backend naming the recipe."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from accelab.config.schema import ExperimentConfig
from accelab.export.onnx import ORT_DEFAULTS, OrtRecipe, quantize, to_onnx
from accelab.variant.targets import Exports, build_on
from trainables.digits import TASK


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return TASK.build_model("mlp", hidden=[32]).eval()


def graph(data: bytes) -> tuple[list[str], dict[str, tuple[int, ...]], dict[str, np.dtype]]:
    m = onnx.load_from_string(data)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return ([n.op_type for n in m.graph.node], {k: v.shape for k, v in inits.items()},
            {k: v.dtype for k, v in inits.items()})  # fmt: skip


def scales(data: bytes) -> list[tuple[int, ...]]:
    _, shapes, _ = graph(data)
    return sorted(shape for name, shape in shapes.items() if name.endswith("_scale"))


FP32 = to_onnx(mlp(), TASK.example_input(2))
CALIB = [TASK.load_splits(0).train.tensors[0][:32]]


def ort_itself(scheme: str) -> bytes:
    """What ORT's quantizer makes with its default arguments (after its pre-processing)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": b.numpy()} for b in CALIB])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as d:
        src, pre, out = Path(d, "a.onnx"), Path(d, "b.onnx"), Path(d, "c.onnx")
        src.write_bytes(FP32)
        quant_pre_process(str(src), str(pre))
        if scheme == "static":
            quantize_static(str(pre), str(out), Reader())
        else:
            quantize_dynamic(str(pre), str(out))
        return out.read_bytes()


def test_ort_defaults_make_the_graph_ort_makes_with_default_arguments():
    for scheme in ("dynamic", "static"):
        ours, theirs = graph(quantize(FP32, scheme, CALIB, ORT_DEFAULTS)), graph(ort_itself(scheme))
        assert ours[0] == theirs[0] and ours[1] == theirs[1] and ours[2] == theirs[2], scheme


def test_per_channel_scales_one_per_output_channel_per_tensor_one():
    per_channel = scales(quantize(FP32, "dynamic", recipe=OrtRecipe(per_channel=True)))
    per_tensor = scales(quantize(FP32, "dynamic", recipe=OrtRecipe(per_channel=False)))
    assert (32,) in per_channel and (10,) in per_channel
    assert all(s in ((), (1,)) for s in per_tensor)


def test_activation_type_and_op_types():
    _, _, dtypes = graph(quantize(FP32, "static", CALIB, OrtRecipe(activation_type="int8")))
    zero_points = {k: v for k, v in dtypes.items() if k in ("view_zero_point", "relu_zero_point")}
    assert zero_points and all(v == np.int8 for v in zero_points.values())
    _, _, dtypes = graph(quantize(FP32, "static", CALIB, OrtRecipe()))
    zero_points = {k: v for k, v in dtypes.items() if k in ("view_zero_point", "relu_zero_point")}
    assert zero_points and all(v == np.uint8 for v in zero_points.values())
    ops, _, _ = graph(quantize(FP32, "dynamic", recipe=OrtRecipe(op_types=("Conv",))))
    assert "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops  # nothing to do


def test_the_backend_names_the_recipe_and_each_recipe_is_built_once():
    model = mlp()
    exports = Exports(model)
    test = TASK.load_splits(0).test.tensors[0]

    def cfg(**quant) -> ExperimentConfig:
        return ExperimentConfig.model_validate({
            "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": [32]}},
            "compression": {"quant": {"bits": 8, **quant}},
            "measure": {"targets": [{"runtime": "onnxruntime"}]},
        })  # fmt: skip

    default = build_on("onnxruntime", model, cfg(), TASK, exports, test)
    tensor = build_on("onnxruntime", model, cfg(per_channel=False), TASK, exports, test)
    static = build_on("onnxruntime", model, cfg(scheme="static", per_channel=False,
                                                 activation_type="int8"), TASK, exports, test)  # fmt: skip
    assert default.backend == "ort-int8-dynamic"
    assert tensor.backend == "ort-int8-dynamic-per-tensor"
    assert static.backend == "ort-int8-static-per-tensor-act-int8"
    assert default.onnx != tensor.onnx and len(exports.int8) == 3
    x = test[:16]
    with torch.inference_mode():
        expected = model(x)
    for b in (default, tensor, static):
        assert (b.runner(x) - expected).abs().max().item() < 0.5
