"""Every model accelab logs is an MLflow Model: ONNX (loaded by ``mlflow.pyfunc.load_model``
with ONNX Runtime alone; no pickled code, no accelab), with a signature and an input
example. Requirements are given, not inferred: inference runs a subprocess (~3 s a model).
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.base import Task, examples_of

MODEL_NAME = "model"  # runs:/<run id>/model


def requirements() -> list[str]:
    import onnx
    import onnxruntime

    return [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]


def log_onnx_model(
    tracking_uri: str, run_id: str, onnx_bytes: bytes, task: Task, reference: nn.Module,
    tags: dict[str, str],
) -> str:  # fmt: skip
    """Log ``onnx_bytes`` as the run's MLflow Model ``model``; returns its models:/ URI.
    The signature comes from ``reference`` (the torch model) on two training images."""
    import mlflow
    import onnx
    from mlflow.models import infer_signature

    first = examples_of(task.load_splits(0).train, 2)[0]
    inputs = first.to(task.input_dtype)  # token ids stay ints
    example = inputs.numpy()
    with torch.inference_mode():
        output = reference.eval()(inputs).float().numpy()
    signature = infer_signature(example, output)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        info = mlflow.onnx.log_model(
            onnx.load_from_string(onnx_bytes), name=MODEL_NAME, signature=signature,
            input_example=example, pip_requirements=requirements(), tags=tags,
            onnx_execution_providers=["CPUExecutionProvider"],
            metadata={"input": task.input_description} if task.input_description else None,
        )  # fmt: skip
    return info.model_uri
