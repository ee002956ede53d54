"""torch -> ONNX (dynamic batch) -> ONNX Runtime int8 (dynamic, or static QDQ calibrated on
training data only; the recipe - per-channel or per-tensor weights, activation type and
symmetry, calibration method, op types - is a searchable knob) or int4 weight-only
(``MatMulNBits``, block-wise), and the check that an export computes what the
torch model computes.

Models cross this module as ONNX bytes (a ``ModelProto`` serialized): small, picklable,
and exactly what is written to disk and measured.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from accelab.compress.recipe import Recipe, float_layers, float_name, unmatched

# onnx, onnxruntime and its quantization tools are imported where used: every command that
# measures imports this module, and only ORT targets need them (measured after torch on a
# busy 2-core machine: onnx 0.35 s, onnxruntime 0.1 s, onnxruntime.quantization 0.1 s,
# its MatMulNBits quantizer 0.85 s).

INPUT, OUTPUT = "input", "output"
EXPORT_ATOL = 1e-4  # fp32 ONNX vs torch, max |logit difference| on the test split
# the export is checked against torch on this many test inputs (read lazily: a test split
# need not fit in memory)
EXPORT_CHECK_EXAMPLES = 256


class ExportError(RuntimeError):
    """The model could not be exported (or the export does not match torch)."""


def to_onnx(model: nn.Module, example: Tensor, exporter: str = "dynamo") -> bytes:
    """ONNX bytes of ``model`` (eval mode) with a dynamic batch dimension.

    ``dynamo``: torch.export-based exporter (torch's supported path, ~3 s for a small
    model here); ``torchscript``: the legacy tracer (~0.1 s, deprecated by torch)."""
    model = model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad(), quiet_exporter():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=65_536)
                program = torch.onnx.export(
                    model, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                    dynamic_shapes=({0: batch},),
                    verbose=False,
                )  # fmt: skip
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp, "model.onnx")
                    program.save(str(path))
                    return path.read_bytes()
            buffer = io.BytesIO()
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, input_names=[INPUT],
                output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )  # fmt: skip
            return buffer.getvalue()
    except Exception as exc:  # exporters raise many types; the caller decides what to do
        raise ExportError(f"ONNX export ({exporter}) failed: {type(exc).__name__}: {exc}") from exc


EXPORTER_LOGGERS = ("torch.onnx", "torch._export", "torch.export", "onnx_ir", "onnxscript")


@contextlib.contextmanager
def quiet_import() -> Iterator[None]:
    """Imports inside leave the root logger as they found it: ORT's MatMulNBits quantizer
    module calls ``logging.basicConfig(level=INFO)`` when imported, which would print every
    library's INFO records (onnx_ir, onnxscript) for the rest of the process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints progress lines and logs warnings about torchvision
    operators, and its graph passes (onnx_ir, onnxscript) log every deduplicated
    initializer and skipped constant fold at INFO, dozens of lines per export once a root
    handler exists (``quiet_import`` of ORT's MatMulNBits quantizer); none of it is for
    the user."""
    loggers = [logging.getLogger(n) for n in EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@dataclass(frozen=True)
class OrtRecipe:
    """How ONNX Runtime quantizes: the knobs of ``quantize_dynamic``/``quantize_static``.
    The defaults are accelab's recipe (per-channel weights, uint8 activations);
    ``ORT_DEFAULTS`` is what ORT does when called with its own default arguments."""

    per_channel: bool = True
    activation_type: str = "uint8"  # static: uint8 | int8
    symmetric_activations: bool = False  # static: extra_options ActivationSymmetric
    calibration_method: str = "minmax"  # static: minmax | entropy | percentile
    op_types: tuple[str, ...] | None = None  # None: every op type ORT quantizes
    # the per-layer recipe (``compress.recipe``) as (name or pattern, bits or None) pairs:
    # the layers it keeps in float go to the quantizer's ``nodes_to_exclude``
    layers: tuple[tuple[str, int | None], ...] = ()

    @property
    def suffix(self) -> str:
        """Appended to the backend name where the recipe is not accelab's default."""
        parts = [] if self.per_channel else ["per-tensor"]
        if kept := float_name(dict(self.layers)):
            parts.append(kept)
        if self.activation_type != "uint8":
            parts.append(f"act-{self.activation_type}")
        if self.symmetric_activations:
            parts.append("sym-act")
        if self.calibration_method != "minmax":
            parts.append(self.calibration_method)
        if self.op_types is not None:
            parts.append("ops-" + "+".join(self.op_types))
        return "".join(f"-{p}" for p in parts)


ORT_DEFAULTS = OrtRecipe(per_channel=False, activation_type="int8")


def quantize(
    fp32: bytes, scheme: str, calibration: Iterable[Tensor] = (), recipe: OrtRecipe = OrtRecipe()
) -> bytes:
    """ONNX Runtime int8: ``dynamic`` (weights int8, activations per batch at run time) or
    ``static`` (QDQ, activations calibrated on ``calibration`` batches), as ``recipe`` says."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self, batches: Iterable[Tensor]):
            self.items = iter([{INPUT: b.numpy()} for b in batches])

        def get_next(self):
            return next(self.items, None)

    root = logging.getLogger()  # ORT's quantizer warns on the root logger (1-D norm weights)
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return _quantize(fp32, scheme, calibration, Batches, recipe)
    finally:
        root.setLevel(level)


def _quantize(fp32: bytes, scheme: str, calibration, Batches, recipe: OrtRecipe) -> bytes:
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre))
        ops = list(recipe.op_types) if recipe.op_types is not None else None
        kept, exclude = float_nodes(onnx.load(str(pre)), dict(recipe.layers))
        if scheme == "static":
            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[recipe.calibration_method]  # fmt: skip
            act = QuantType.QUInt8 if recipe.activation_type == "uint8" else QuantType.QInt8
            quantize_static(
                str(pre), str(out), Batches(calibration), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=ops, per_channel=recipe.per_channel,
                weight_type=QuantType.QInt8, activation_type=act, calibrate_method=method,
                extra_options={"ActivationSymmetric": recipe.symmetric_activations},
                nodes_to_exclude=exclude,
            )  # fmt: skip
        else:
            quantize_dynamic(str(pre), str(out), op_types_to_quantize=ops, nodes_to_exclude=exclude,
                             weight_type=QuantType.QInt8, per_channel=recipe.per_channel)  # fmt: skip
        check_float(onnx.load(str(out)), kept)
        return out.read_bytes()


WEIGHT_SUFFIX = ".weight"  # torch's exporters name a layer's weight initializer <layer>.weight


def float_nodes(model, recipe: Recipe) -> tuple[list[str], list[str]]:
    """(layers, node names) of ``model`` (a ModelProto) that ``recipe`` keeps in float: the
    nodes that read such a layer's weight initializer, also under the name ORT's quantizer
    gives a Gemm it rewrites as MatMul (``<node>_MatMul``, dynamic int8). A float key of the
    recipe that matches no layer's weight raises ``ExportError`` (the export renamed it:
    quantizing anyway would report a mixed-precision model that is not one)."""
    initializers = {t.name for t in model.graph.initializer}
    users: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in initializers and name.endswith(WEIGHT_SUFFIX):
                users.setdefault(name[: -len(WEIGHT_SUFFIX)], []).append(node.name)
    missing = unmatched(list(users), {k: b for k, b in recipe.items() if b is None})
    if missing:
        raise ExportError(
            f"compression.quant.layers: {missing} keep layers in float, but the ONNX graph has "
            f"no weight of such a layer (weights: {sorted(users)})"
        )
    kept = float_layers(users, recipe)
    return kept, [
        alias for name in kept for node in users[name] for alias in (node, f"{node}_MatMul")
    ]


FLOAT_OPS = ("Gemm", "MatMul", "Conv")


def check_float(model, layers: list[str]) -> None:
    """Raise ``ExportError`` unless every layer of ``layers`` is still computed by a float
    op (Gemm, MatMul, Conv) reading its float weight initializer (``<layer>.weight``, or
    the transposed copy ORT's quantizer makes): the quantizer kept it in float."""
    initializers = {t.name for t in model.graph.initializer}
    read = {
        name for node in model.graph.node if node.op_type in FLOAT_OPS
        for name in node.input if name in initializers
    }  # fmt: skip
    quantized = [
        layer for layer in layers
        if not any(n == layer + WEIGHT_SUFFIX or n.startswith(layer + WEIGHT_SUFFIX + "_Transposed")
                   for n in read)
    ]  # fmt: skip
    if quantized:
        raise ExportError(f"ONNX Runtime quantized layers kept in float: {quantized}")


def quantize_int4(fp32: bytes, block_size: int = 32, layers: Recipe | None = None) -> bytes:
    """ONNX Runtime int4 weight-only: every MatMul with a constant 2-D weight becomes a
    ``MatMulNBits`` node (asymmetric uint4, one scale and zero point per ``block_size``
    input channels; activations stay fp32). torch exports ``nn.Linear`` on 2-D inputs as
    ``Gemm``, which ORT's quantizer skips, so those become MatMul + Add first. Layers
    ``layers`` (``compress.recipe``) keeps in float stay fp32 MatMuls."""
    import onnx

    with quiet_import():
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

    model = gemm_to_matmul(onnx.load_from_string(fp32))
    kept, exclude = float_nodes(model, layers or {})
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=False, bits=4)
    quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=exclude)
    root = logging.getLogger()  # the quantizer logs every node it visits at INFO
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantizer.process()
    finally:
        root.setLevel(level)
    check_float(quantizer.model.model, kept)
    return quantizer.model.model.SerializeToString()


def gemm_to_matmul(model):
    """``model`` (a ModelProto, changed in place) with each ``Gemm`` whose weight B is a
    constant (alpha 1, beta 1, A not transposed: what ``nn.Linear`` exports) rewritten as
    MatMul against the [in, out] weight, plus Add of the bias: the form ``MatMulNBits``
    replaces. Other Gemms are left as they are (they stay fp32)."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        linear = (
            node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in weights
            and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
            and not attrs.get("transA", 0)
        )  # fmt: skip
        if not linear:
            nodes.append(node)
            continue
        w = weights[node.input[1]]
        array = numpy_helper.to_array(w)
        w.CopyFrom(numpy_helper.from_array(array.T.copy() if attrs.get("transB", 0) else array,
                                           w.name))  # fmt: skip
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        product = node.output[0] + "_matmul" if bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], w.name], [product],
                                      name=(node.name or w.name) + "_matmul"))  # fmt: skip
        if bias:
            nodes.append(helper.make_node("Add", [product, bias], [node.output[0]],
                                          name=(node.name or w.name) + "_bias"))  # fmt: skip
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def session(model: bytes, threads: int = 1):
    """An ONNX Runtime CPU session on ``threads`` intra-op threads (fixed per session)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def max_abs_diff(model: nn.Module, onnx_model: bytes, inputs: Tensor, batch: int = 256) -> float:
    """Largest |torch output - ONNX Runtime output| over ``inputs``."""
    sess = session(onnx_model, threads=1)
    worst = 0.0
    with torch.inference_mode():
        for i in range(0, len(inputs), batch):
            x = inputs[i : i + batch]
            ours = sess.run(None, {INPUT: x.numpy()})[0]
            worst = max(worst, float(np.abs(model(x).float().numpy() - ours).max()))
    return worst
