"""Every model accelab logs is an MLflow Model that loads with ``mlflow.pyfunc.load_model``
without accelab's code and without unpickling code:

    model        ONNX (ONNX Runtime): the file an ONNX Runtime target ran
    torch_model  a torch.export program (.pt2, MLflow's "pt2" format): what a torch target
                 ran, where torch can export it

Each has a signature and an input example, and its tags name the backend it runs and the
targets that measured it. Requirements are given, not inferred: inference runs a subprocess
(~3 s a model), and an inferred list warns on load when a package is missing.
"""

from __future__ import annotations

import hashlib

import mlflow
import numpy as np
import onnx
import onnxruntime
import torch
from mlflow.models import infer_signature
from mlflow.models.signature import ModelSignature
from torch import nn

from trainables.base import Task, examples_of

MODEL_NAME = "model"  # runs:/<run id>/model
TORCH_MODEL_NAME = "torch_model"  # runs:/<run id>/torch_model


def requirements() -> list[str]:
    return [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]


def torch_requirements() -> list[str]:
    # the local build's suffix (2.13.0+cpu) is not a pip version; the release is
    return [f"torch=={torch.__version__.split('+')[0]}"]


def signature_of(task: Task, reference: nn.Module) -> tuple[np.ndarray, ModelSignature]:
    """An input example (two training inputs, batch dimension free) and the signature from
    ``reference`` (the torch model) on it; token ids stay ints."""
    first = examples_of(task.load_splits(0).train, 2)[0]
    inputs = first.to(task.input_dtype)
    with torch.inference_mode():
        output = reference.eval()(inputs).float().numpy()
    example = inputs.numpy()
    return example, infer_signature(example, output)


def metadata_of(task: Task) -> dict[str, str] | None:
    return {"input": task.input_description} if task.input_description else None


def log_onnx_model(
    tracking_uri: str, run_id: str, onnx_bytes: bytes, task: Task, reference: nn.Module,
    tags: dict[str, str],
) -> str:  # fmt: skip
    """Log ``onnx_bytes`` as the run's MLflow Model ``model``; returns its models:/ URI."""
    example, signature = signature_of(task, reference)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        info = mlflow.onnx.log_model(
            onnx.load_from_string(onnx_bytes), name=MODEL_NAME, signature=signature,
            input_example=example, pip_requirements=requirements(), tags=tags,
            onnx_execution_providers=["CPUExecutionProvider"], metadata=metadata_of(task),
        )  # fmt: skip
    return info.model_uri


def weights_digest(model: nn.Module) -> str:
    """sha256 of a torch model's tensors (names, dtypes, bytes): the same recipe on the same
    weights gives the same digest, so a rerun registers no new version."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def log_torch_model(
    tracking_uri: str, run_id: str, model: nn.Module, task: Task, tags: dict[str, str]
) -> str:
    """Log ``model`` as it ran on torch as the run's MLflow Model ``torch_model``: a
    torch.export program (no pickle; ``torch.export.load`` needs torch only), batch
    dimension dynamic. Raises what ``torch.export`` raises for a model it cannot export."""
    example, signature = signature_of(task, model)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False), torch.no_grad():
        info = mlflow.pytorch.log_model(
            model.eval(), name=TORCH_MODEL_NAME, signature=signature, input_example=example,
            serialization_format="pt2", pip_requirements=torch_requirements(), tags=tags,
            metadata=metadata_of(task),
        )  # fmt: skip
    return info.model_uri
