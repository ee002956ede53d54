"""Write one export format of an fp32 model, and describe what the file expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from accelab.backends import OV_F32, OV_INT8
from accelab.errors import UsageError
from accelab.export import openvino
from accelab.export.onnx import (
    EXPORT_ATOL,
    EXPORT_CHECK_EXAMPLES,
    INPUT,
    OUTPUT,
    max_abs_diff,
    quantize,
    to_onnx,
)
from trainables.base import Task, examples_of


def write(
    fmt: str, model: nn.Module, task: Task, path: Path, measured: Path | None, scheme: str,
    calibration: list[torch.Tensor],
) -> dict[str, Any]:  # fmt: skip
    """``model`` (fp32, eval) as ``fmt`` at ``path``; ``measured``: the ONNX file a run
    measured in this format, copied as is. Returns export.json's facts."""
    example = task.example_input(2)
    info: dict[str, Any] = {
        "format": fmt,
        "input": {
            "name": INPUT,
            "shape": ["batch", *task.input_shape],
            "dtype": str(example.dtype),
        },
        "output": {"name": OUTPUT},
    }
    test_inputs = examples_of(task.load_splits(0).test, EXPORT_CHECK_EXAMPLES)[0]
    if fmt == "torch-export":
        batch = torch.export.Dim("batch", min=1, max=65_536)
        with torch.no_grad():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
        return {**info, "backend": "torch-fp32", "note": "torch.export program, fp32"}
    if measured is not None:
        path.write_bytes(measured.read_bytes())
        backend = measured.stem
        return {**info, "backend": backend, "note": f"the {backend} model the run measured"}
    fp32 = to_onnx(model, example)
    diff = max_abs_diff(model, fp32, test_inputs)
    if diff > EXPORT_ATOL:
        raise UsageError(f"ONNX export differs from torch by {diff:.2e} (> {EXPORT_ATOL:g})")
    if fmt == "onnx":
        path.write_bytes(fp32)
        return {**info, "backend": "ort-fp32", "note": f"fp32, max |diff| vs torch {diff:.1e}"}
    if fmt.startswith("openvino"):
        return {**info, **write_openvino(fmt, model, task, path, fp32, calibration, test_inputs)}
    data = quantize(fp32, scheme, calibration)
    path.write_bytes(data)
    return {**info, "backend": f"ort-int8-{scheme}", "note": f"int8 {scheme}, made now"}


def write_openvino(
    fmt: str, model: nn.Module, task: Task, path: Path, fp32: bytes,
    calibration: list[torch.Tensor], test_inputs: torch.Tensor,
) -> dict[str, Any]:  # fmt: skip
    """The OpenVINO IR (``path`` = the .xml, the .bin beside it) converted from the checked
    ONNX export, as the openvino targets measure it: fp32 weights, or NNCF int8 calibrated
    on ``calibration`` (training batches; the transformer preset for language models). The
    fp32 IR is checked against torch at ``INFERENCE_PRECISION_HINT=f32``."""
    if not openvino.available():
        raise UsageError(f"--format {fmt}: {openvino.MISSING.split(': ', 1)[1]}")
    ir = openvino.from_onnx(fp32)
    if fmt == "openvino":
        diff = openvino.max_abs_diff_f32(ir, model, test_inputs)
        if diff > EXPORT_ATOL:
            raise UsageError(f"OpenVINO IR differs from torch by {diff:.2e} (> {EXPORT_ATOL:g})")
        openvino.save_ir(ir, path)
        note = f"OpenVINO IR, fp32 weights, max |diff| vs torch {diff:.1e} at the f32 hint"
        return {"backend": OV_F32, "note": note, "weights": path.with_suffix(".bin").name}
    ir = openvino.quantize_int8(ir, calibration, task.generates)
    openvino.save_ir(ir, path)
    note = "OpenVINO IR, NNCF int8 calibrated on training data, made now"
    return {"backend": OV_INT8, "note": note, "weights": path.with_suffix(".bin").name}
