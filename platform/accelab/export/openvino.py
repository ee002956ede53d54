"""ONNX -> OpenVINO (CPU plugin), and int8 through NNCF post-training quantization.

The OpenVINO model is converted from the same ONNX export ONNX Runtime runs (checked
against torch once, see ``accelab.variant.targets.export_fp32``), so both runtimes start
from one graph. int8: ``nncf.quantize`` calibrated on training batches only, with NNCF's
transformer preset for language models (it keeps the attention softmax and friends out of
int8, where per-tensor activations lose quality). int4: ``nncf.compress_weights``, weights
only, data-free. Layers a per-layer recipe (``compress.recipe``) keeps in float go to
NNCF's ``ignored_scope`` and are checked to be float afterwards. The import is lazy:
OpenVINO and NNCF are an optional extra (``pip install -e '.[openvino]'``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from torch import Tensor

from accelab.compress.recipe import Recipe, float_layers, unmatched
from accelab.export.onnx import WEIGHT_SUFFIX, ExportError

MISSING = (
    "measure.targets: runtime openvino needs the openvino and nncf packages "
    "(pip install -e '.[openvino]')"
)


def available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """NNCF without its chatter: its INFO tables (bit-width statistics) and the progress bars
    it draws on stdout for every call (rich, with no switch to turn them off) would land in
    the middle of accelab's own progress lines. Warnings and errors still come through."""
    import nncf

    nncf.set_log_level(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def from_onnx(onnx: bytes):
    """The ``openvino.Model`` of ONNX bytes (read by OpenVINO's ONNX frontend)."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.onnx"
        path.write_bytes(onnx)
        return ov.convert_model(str(path))


def quantize_int8(
    model, calibration: Iterable[Tensor], transformer: bool, layers: Recipe | None = None
):
    """NNCF post-training int8 of ``model`` (an ``openvino.Model``; not changed), calibrated
    on ``calibration`` (training batches): every batch given, not NNCF's default subset.
    Layers ``layers`` keeps in float are left out (weights and inputs stay float)."""
    import nncf

    kept, ignored = _ignored(model, layers)
    batches = [b.numpy() for b in calibration]
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    with quiet():
        quantized = nncf.quantize(
            model.clone(), nncf.Dataset(batches), subset_size=max(1, len(batches)),
            ignored_scope=ignored, **kwargs,
        )  # fmt: skip
    check_float(quantized, kept)
    return quantized


def compress_int4(model, group_size: int, layers: Recipe | None = None):
    """NNCF int4 weight-only compression of ``model`` (an ``openvino.Model``; not changed):
    every MatMul/Convolution weight becomes uint4 with one fp16 scale and one uint4 zero
    point per ``group_size`` input channels (``INT4_ASYM``: the format ORT's MatMulNBits
    runs here, so the two runtimes compare one format); activations stay float. Data-free
    (no calibration). ``ratio=1.0`` and ``all_layers=True``: every layer int4, NNCF's int8
    backup for the first and last layers off (its default would make a mixed model whose
    name says int4). Layers ``layers`` keeps in float are NNCF's ``ignored_scope``. A group
    size that does not divide a layer's input channels raises ``ExportError``."""
    import nncf

    kept, ignored = _ignored(model, layers)
    try:
        with quiet():
            compressed = nncf.compress_weights(
                model.clone(), mode=nncf.CompressWeightsMode.INT4_ASYM,
                group_size=group_size, ratio=1.0, all_layers=True,
                ignored_scope=ignored,
            )  # fmt: skip
    except nncf.errors.InvalidGroupSizeError as exc:
        raise ExportError(
            f"compression.quant.block_size: {group_size} does not divide the input channels "
            f"of every layer, which OpenVINO's int4 groups need ({exc})"
        ) from exc
    check_float(compressed, kept)
    return compressed


WEIGHT_OPS = ("MatMul", "Convolution", "GroupConvolution")


def weight_path(op) -> list:
    """The nodes from ``op``'s weight input (input 1) up to the Constant it reads, nearest
    first, following each node's first input (Convert, Reshape, Transpose, FakeQuantize,
    NNCF's decompression Subtract/Multiply); ends at a Parameter where it is not constant."""
    path = [op.input(1).get_source_output().get_node()]
    while path[-1].get_type_name() not in ("Constant", "Parameter") and path[-1].get_input_size():
        path.append(path[-1].input(0).get_source_output().get_node())
    return path


def layer_ops(model) -> dict[str, list[str]]:
    """accelab layer name -> the OpenVINO ops (MatMul, Convolution) computing it: those whose
    weight comes from the constant ``<layer>.weight`` (the ONNX initializer's name, which
    OpenVINO's ONNX frontend and NNCF's compression keep)."""
    users: dict[str, list[str]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in WEIGHT_OPS:
            source = weight_path(op)[-1]
            name = source.get_friendly_name()
            if source.get_type_name() == "Constant" and name.endswith(WEIGHT_SUFFIX):
                users.setdefault(name[: -len(WEIGHT_SUFFIX)], []).append(op.get_friendly_name())
    return users


def _ignored(model, layers: Recipe | None):
    """(``float_ops``, NNCF's ``IgnoredScope`` of their op names)."""
    import nncf

    kept = float_ops(model, layers or {})
    return kept, nncf.IgnoredScope(names=[op for ops in kept.values() for op in ops])


def float_ops(model, recipe: Recipe) -> dict[str, list[str]]:
    """The layers of ``model`` that ``recipe`` keeps in float -> their op names (which NNCF
    keeps; it renames the weight constants of the ops it quantizes to int8). A float key
    that matches no layer's weight raises ``ExportError`` (quantizing anyway would report a
    mixed-precision model that is not one)."""
    users = layer_ops(model)
    missing = unmatched(list(users), {k: b for k, b in recipe.items() if b is None})
    if missing:
        raise ExportError(
            f"compression.quant.layers: {missing} keep layers in float, but the OpenVINO model "
            f"has no weight of such a layer (weights: {sorted(users)})"
        )
    return {name: users[name] for name in float_layers(users, recipe)}


FLOAT_TYPES = ("f32", "f16", "bf16")
SHAPE_OPS = ("Transpose", "Reshape")  # carry a weight or an input without changing its values


def check_float(model, kept: dict[str, list[str]]) -> None:
    """Raise ``ExportError`` unless every op of ``kept`` (layer -> op names, ``float_ops``
    of the model before quantization) still computes in float: its weight a float constant
    with nothing but reshapes on the way (no FakeQuantize, no int8/int4 decompression), and
    no FakeQuantize on its input."""
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    quantized = [
        layer for layer, names in kept.items()
        if not all(name in ops and _float_op(ops[name]) for name in names)
    ]  # fmt: skip
    if quantized:
        raise ExportError(f"OpenVINO quantized layers kept in float: {quantized}")


def _float_op(op) -> bool:
    path = weight_path(op)
    constant = path[-1].get_output_element_type(0).get_type_name()
    source = op.input(0).get_source_output().get_node()
    while source.get_type_name() in SHAPE_OPS:
        source = source.input(0).get_source_output().get_node()
    return (
        constant in FLOAT_TYPES
        and all(node.get_type_name() in SHAPE_OPS for node in path[:-1])
        and source.get_type_name() != "FakeQuantize"
    )


def weight_types(model) -> dict[str, str]:
    """Op name (MatMul, Convolution) -> the element type its weight constant is stored as
    (f32, u4, i8, ...): what the serialized model really holds."""
    return {
        op.get_friendly_name(): weight_path(op)[-1].get_output_element_type(0).get_type_name()
        for op in model.get_ordered_ops() if op.get_type_name() in WEIGHT_OPS
    }  # fmt: skip


def save_ir(model, xml: Path) -> None:
    """Write ``model`` as ``xml`` + the .bin beside it, weights at their own precision (no
    fp16 compression: the file runs what was measured)."""
    import openvino as ov

    ov.save_model(model, str(xml), compress_to_fp16=False)


def max_abs_diff_f32(model, torch_model, inputs: Tensor) -> float:
    """Largest |difference| between ``model`` compiled at ``INFERENCE_PRECISION_HINT=f32``
    and ``torch_model`` on ``inputs``."""
    import numpy as np
    import openvino as ov
    import torch

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled(inputs.numpy())[compiled.output(0)]
    with torch.no_grad():
        ref = torch_model(inputs).numpy()
    return float(np.abs(out - ref).max())


def serialized_size(model) -> int:
    """Bytes of the OpenVINO IR (xml + bin) as saved, weights kept at their precision."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as d:
        ov.save_model(model, str(Path(d) / "model.xml"), compress_to_fp16=False)
        return sum(p.stat().st_size for p in Path(d).iterdir())
