"""Every model accelab logs is an MLflow Model that loads with ``mlflow.pyfunc.load_model``
without accelab's code and without unpickling code:

    model        ONNX (ONNX Runtime): the file an ONNX Runtime target ran
    torch_model  a torch.export program (.pt2, MLflow's "pt2" format): what a torch target
                 ran, where torch can export it
    openvino_model  the OpenVINO IR (.xml + .bin) an OpenVINO target ran, as a pyfunc
                 whose code (``openvino_pyfunc.py``, models-from-code) reads it with
                 ``openvino.Core`` and compiles it with the settings it was measured with

Each has a signature and an input example, and its tags name the backend it runs and the
targets that measured it. Requirements are given, not inferred: inference runs a subprocess
(~3 s a model), and an inferred list warns on load when a package is missing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import onnx
import onnxruntime
import torch
from mlflow.models import infer_signature
from mlflow.models.signature import ModelSignature
from torch import nn

from accelab.tracking import names
from trainables.base import Task, examples_of

MODEL_NAME = "model"  # runs:/<run id>/model
TORCH_MODEL_NAME = "torch_model"  # runs:/<run id>/torch_model
OPENVINO_MODEL_NAME = "openvino_model"  # runs:/<run id>/openvino_model
OPENVINO_CODE = Path(__file__).with_name("openvino_pyfunc.py")


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


def openvino_requirements() -> list[str]:
    return [f"openvino=={importlib.metadata.version('openvino')}", f"numpy=={np.__version__}"]


def save_ir(ov_model, directory: Path) -> tuple[Path, Path]:
    """``ov_model`` as OpenVINO IR in ``directory``: (xml, bin), weights at the precision
    they ran at (no fp16 compression of f32 weights)."""
    import openvino as ov

    xml = directory / "model.xml"
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    return xml, xml.with_suffix(".bin")


def ir_digest(xml: Path, weights: Path) -> str:
    """sha256 of the IR's two files: a rerun of the same recipe registers no new version."""
    h = hashlib.sha256()
    for path in (xml, weights):
        h.update(path.read_bytes())
    return h.hexdigest()


def log_openvino_model(
    tracking_uri: str, run_id: str, ov_model, settings: dict[str, object], task: Task,
    reference: nn.Module, tags: dict[str, str],
) -> str:  # fmt: skip
    """Log ``ov_model`` (an ``openvino.Model``) as the run's MLflow Model
    ``openvino_model``: its IR files as artifacts, ``settings`` (the compile config it was
    measured with) as the model config; ``tags`` gain the IR's digest. Returns the URI."""
    example, signature = signature_of(task, reference)
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        xml, weights = save_ir(ov_model, Path(tmp))
        tags = {**tags, names.MODEL_SHA: ir_digest(xml, weights)}
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            info = mlflow.pyfunc.log_model(
                name=OPENVINO_MODEL_NAME, python_model=str(OPENVINO_CODE),
                artifacts={"openvino_xml": str(xml), "openvino_bin": str(weights)},
                model_config=dict(settings), signature=signature,
                input_example=example, pip_requirements=openvino_requirements(), tags=tags,
                metadata=metadata_of(task),
            )  # fmt: skip
    return info.model_uri
