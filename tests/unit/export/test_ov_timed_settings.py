"""What OpenVINO times is compiled with the runner's settings: the runner compiles one
model per input shape (static shapes), and each of those, not only the probe that names
the backend, runs on ``INFERENCE_NUM_THREADS=threads``, one stream, the latency hint and
the precision asked for (f32: else the CPU's default, bf16 where it has bf16 units)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from accelab.export.onnx import to_onnx
from trainables.digits import TASK

pytest.importorskip("openvino")


def test_every_compiled_shape_runs_on_the_runners_threads_streams_and_hint():
    from accelab.export.openvino import from_onnx
    from accelab.export.runner import OvRunner, _short

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    runner = OvRunner(from_onnx(to_onnx(model, TASK.example_input(2))), model, "fp", "f32", 1)
    for batch in (1, 16):
        runner(torch.rand(batch, *TASK.input_shape))
    assert len(runner._compiled) == 2
    for request in runner._compiled.values():
        compiled = request.get_compiled_model()
        got = {key: str(compiled.get_property(key)) for key in
               ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT")}  # fmt: skip
        assert got == {"INFERENCE_NUM_THREADS": "1", "NUM_STREAMS": "1",
                       "PERFORMANCE_HINT": "LATENCY"}  # fmt: skip
        assert _short(compiled.get_property("INFERENCE_PRECISION_HINT")) == "f32"
