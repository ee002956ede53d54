"""An ONNX Runtime runner runs on the threads it was given (fixed when its session is
created) and reports them, and its size is its ONNX file's."""

from __future__ import annotations

import pytest

from accelab.export.onnx import session, to_onnx
from accelab.export.runner import OrtRunner
from accelab.measure import describe, per_example
from tests.helpers_torch import trained_mlp
from trainables.digits import TASK


@pytest.fixture(scope="module")
def exported():
    model, splits = trained_mlp((32,), epochs=1)
    return model, splits, to_onnx(model, TASK.example_input(2))


@pytest.mark.parametrize("threads", [1, 3])
def test_the_session_runs_on_the_runners_threads(exported, threads):
    model, splits, onnx = exported
    runner = OrtRunner(onnx, model, "ort-fp32", threads)
    options = runner._session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (threads, 1)
    assert session(onnx, threads).get_session_options().intra_op_num_threads == threads
    m = describe(runner, per_example(runner, splits.test, TASK), TASK, None, 8)
    assert m.threads == threads and m.backend == "ort-fp32"
    assert m.size_bytes == runner.size_bytes() == len(onnx)
