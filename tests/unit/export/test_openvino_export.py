"""``accelab export --format openvino | openvino-int8``: the OpenVINO IR the openvino targets
measure, written as .xml + .bin that OpenVINO alone loads: fp32 weights checked against
torch, or NNCF int8 (weights stored as i8) calibrated on training batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from accelab.backends import OV_F32, OV_INT8
from accelab.export import files
from accelab.export.openvino import weight_types
from tests.helpers_torch import trained_mlp
from trainables.digits import TASK

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def trained():
    model, splits = trained_mlp((32,))
    return model.eval(), splits


def load(path):
    return ov.Core().read_model(str(path))


@pytest.mark.parametrize(("fmt", "backend", "weights"), [("openvino", OV_F32, "f32"),
                                                          ("openvino-int8", OV_INT8, "i8")])  # fmt: skip
def test_the_ir_loads_with_openvino_alone_and_runs_what_was_asked(trained, tmp_path, fmt, backend,
                                                                  weights):  # fmt: skip
    model, splits = trained
    path = tmp_path / "model.xml"
    calibration = [splits.train.tensors[0][:64]]
    info = files.write(fmt, model, TASK, path, None, "dynamic", calibration)
    assert info["backend"] == backend and info["weights"] == "model.bin"
    assert path.exists() and path.with_suffix(".bin").exists()
    ir = load(path)
    assert set(weight_types(ir).values()) == {weights}, weight_types(ir)
    x = splits.test.tensors[0][:32]
    compiled = ov.Core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled(x.numpy())[compiled.output(0)]
    with torch.no_grad():
        ref = model(x).numpy()
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.9
    if fmt == "openvino":
        assert np.abs(out - ref).max() < 1e-4  # the fp32 IR is the torch model
