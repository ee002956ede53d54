"""The MLflow pyfunc of an OpenVINO IR (logged by ``accelab.tracking.models``).

A models-from-code file: MLflow copies this file into the logged model and runs it on
``mlflow.pyfunc.load_model``, so loading needs mlflow, numpy and openvino only (not
accelab) and unpickles nothing. The weights are the IR's ``.bin`` artifact, read by
``openvino.Core``; the compile settings the model was measured with (threads, streams,
hint, precision) are the model's ``model_config`` (a caller may pass other settings to
``load_model(model_config=...)``). One compiled model per input shape, compiled on first
use: static shapes are what the CPU plugin runs fastest, and what was timed.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

XML, BIN = "openvino_xml", "openvino_bin"  # artifact keys


class OpenVINOModel(PythonModel):
    def load_context(self, context) -> None:
        import openvino as ov

        self._core = ov.Core()
        self._model = self._core.read_model(context.artifacts[XML], context.artifacts[BIN])
        self._config = dict(context.model_config or {})
        self._compiled: dict[tuple[int, ...], object] = {}

    def _compiled_for(self, shape: tuple[int, ...]):
        if shape not in self._compiled:
            static = self._model.clone()
            static.reshape({0: list(shape)})
            self._compiled[shape] = self._core.compile_model(static, "CPU", self._config)
        return self._compiled[shape]

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(model_input))
        return self._compiled_for(tuple(x.shape))(x)[0]


mlflow.models.set_model(OpenVINOModel())
