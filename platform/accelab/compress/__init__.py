"""Pure-torch compression primitives: pruning (unstructured, gradual, structured) and
quantization (fake-quant simulation and real int8 kernels). No Ray, MLflow or YAML here.

Functions that prune or prepare a model change it in place and return it; converters to
real quantized kernels return a new model.
"""

from __future__ import annotations

from accelab.compress.errors import CompressionError
from accelab.compress.prune import (
    GradualPruner,
    apply_masks,
    apply_structured,
    apply_unstructured,
    check_layer_names,
    cubic_sparsity,
    make_masks,
    prunable_layers,
    sparsity_report,
)
from accelab.compress.quant import (
    FakeQuantConv2d,
    FakeQuantLinear,
    calibrate,
    convert_int8_dynamic,
    fake_quant_report,
    load_int8,
    prepare_fake_quant,
    save_int8,
)

__all__ = [
    "CompressionError",
    "FakeQuantConv2d",
    "FakeQuantLinear",
    "GradualPruner",
    "apply_masks",
    "apply_structured",
    "apply_unstructured",
    "calibrate",
    "check_layer_names",
    "convert_int8_dynamic",
    "cubic_sparsity",
    "fake_quant_report",
    "load_int8",
    "make_masks",
    "prepare_fake_quant",
    "prunable_layers",
    "save_int8",
    "sparsity_report",
]
