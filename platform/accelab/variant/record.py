"""A judged variant into its MLflow run: metrics, per-target tags and errors, the deployable
model, the ONNX files ONNX Runtime targets ran (exports of the run), and its MLflow Models:
the ONNX model, the torch.export program of what a torch target ran where torch can
export it (torch's x86 int8 modules cannot be: their packed weights are opaque to
``torch.export``, and MLflow refuses pickled models by default; the run says so), and the
OpenVINO IR an OpenVINO target ran (a pyfunc that reads it with ``openvino.Core``)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from accelab.backends import TORCH_INT8, TORCH_INT8_STATIC
from accelab.compress.deploy import save_deployable
from accelab.config.schema import ExperimentConfig
from accelab.tasks import resolve_task
from accelab.tracking import names
from accelab.tracking.client import log_metrics_once
from accelab.tracking.models import (
    log_onnx_model,
    log_openvino_model,
    log_torch_model,
    weights_digest,
)
from accelab.variant.judge import VariantResult
from accelab.variant.targets import variant_onnx
from trainables.base import Task

STATUS_TAG = names.STATUS
MODEL_SHA_TAG = names.MODEL_SHA  # sha256 of the MLflow Model's ONNX file


def log_variant(tracking_uri: str, run_id: str, r: VariantResult, cfg: ExperimentConfig) -> None:
    """Final metrics (one row each, step 0 of the variant), tags, the deployable model and
    the exports; the status tag is written last: "ok" means everything is recorded."""
    client = MlflowClient(tracking_uri)
    log_metrics_once(client, run_id, 0, r.metrics)
    log_variant_tags(client, run_id, r)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp, "deployable_model")
        quant = cfg.compression.quant.model_dump()
        save_deployable(r.deployable, directory, cfg.trainable.model_dump(), r.float_model, quant)
        client.log_artifacts(run_id, str(directory), "deployable_model")
        onnx = {
            t.built.backend: t.built.onnx for t in r.targets.values() if t.built and t.built.onnx
        }
        for backend, data in onnx.items():
            path = Path(tmp, f"{backend}.onnx")
            path.write_bytes(data)
            client.log_artifact(run_id, str(path), "onnx")
    log_model(tracking_uri, run_id, r, cfg)
    client.set_tag(run_id, STATUS_TAG, "ok")


def log_model(tracking_uri: str, run_id: str, r: VariantResult, cfg: ExperimentConfig) -> None:
    """The variant as MLflow Models, loadable with mlflow.pyfunc without accelab's code:
    ONNX always, and what the torch targets ran where there are torch targets."""
    task = resolve_task(cfg.trainable.name)
    data, backend, reference = variant_onnx(r, cfg, task)
    ran = [k for k, t in r.targets.items() if t.built is not None and t.built.onnx == data]
    # the served file's digest: a rerun that recommends the same model registers no new version
    digest = hashlib.sha256(data).hexdigest()
    tags = {names.BACKEND: backend, names.KIND: "variant", MODEL_SHA_TAG: digest,
            names.TARGET: ",".join(ran) or "none (made from the weights, not measured)"}  # fmt: skip
    log_onnx_model(tracking_uri, run_id, data, task, reference, tags)
    log_torch_targets_model(tracking_uri, run_id, r, task)
    log_openvino_targets_model(tracking_uri, run_id, r, task)


UNEXPORTABLE = {
    backend: f"{backend} is torch.ao int8 (packed weights that torch.export cannot trace; "
    "MLflow refuses pickled models): not logged as an MLflow Model; add an onnxruntime "
    "target to register an int8 model that is served as measured"
    for backend in (TORCH_INT8, TORCH_INT8_STATIC)
}


def log_torch_targets_model(tracking_uri: str, run_id: str, r: VariantResult, task: Task) -> None:
    """The model the torch targets ran (one model: every torch target runs the same one) as
    the MLflow Model ``torch_model``, tagged with its backend and those targets; where it
    cannot be exported, the run's ``accelab.torch_model_error`` tag says why."""
    ran = {k: t for k, t in r.targets.items() if t.target.runtime == "torch" and t.built}
    ran = {k: t for k, t in ran.items() if t.built.runner is not None}
    if not ran:
        return
    first = next(iter(ran.values()))
    why = UNEXPORTABLE.get(first.backend)
    if why is None:
        model = first.built.runner.model
        tags = {names.BACKEND: first.backend, names.KIND: "variant",
                MODEL_SHA_TAG: weights_digest(model), names.TARGET: ",".join(ran)}  # fmt: skip
        try:
            log_torch_model(tracking_uri, run_id, model, task, tags)
        except Exception as exc:  # torch.export refuses some models (data-dependent control flow)
            why = f"torch.export failed for {first.backend}: {type(exc).__name__}: {exc}"
    if why:
        MlflowClient(tracking_uri).set_tag(run_id, names.TORCH_MODEL_ERROR, why[:5000])


def log_openvino_targets_model(
    tracking_uri: str, run_id: str, r: VariantResult, task: Task
) -> None:
    """The OpenVINO model the OpenVINO targets ran (one model: a variant's OpenVINO targets
    differ only in batch size and run the same IR) as the MLflow Model ``openvino_model``,
    with the compile settings it was measured with, tagged with its backend and targets."""
    ran = {k: t for k, t in r.targets.items() if t.target.runtime == "openvino" and t.built}
    ran = {k: t for k, t in ran.items() if t.built.runner is not None}
    if not ran:
        return
    runner = next(iter(ran.values())).built.runner
    targets = [k for k, t in ran.items() if t.backend == runner.backend]
    tags = {names.BACKEND: runner.backend, names.KIND: "variant", names.TARGET: ",".join(targets)}
    log_openvino_model(
        tracking_uri, run_id, runner.ov_model, runner.config(), task, runner.model, tags
    )


def latency_method_tags(r: VariantResult) -> dict[str, str]:
    """How each target's latency was timed, as it was (calls per block, real-time priority
    granted or refused), not as configured; "simulated" where no real kernel ran."""
    return {
        names.for_target(names.LATENCY_METHOD, key if i else None): (
            t.measurement.latency.method if t.measurement.latency else "simulated"
        )
        for i, (key, t) in enumerate(r.targets.items())
        if t.measurement
    }


def log_variant_tags(client, run_id: str, r: VariantResult) -> None:
    p = r.primary
    tags = {
        names.BACKEND: p.backend,
        names.SIMULATED: str(p.measurement.simulated).lower(),
        names.DEVICE: p.measurement.device,
        names.TARGETS: json.dumps([[k, t.target.label, t.backend] for k, t in r.targets.items()]),
    }
    tags.update(latency_method_tags(r))
    for key, t in list(r.targets.items())[1:]:
        tags[names.for_target(names.BACKEND, key)] = t.backend
        if t.error:
            tags[names.for_target(names.TARGET_ERROR, key)] = t.error[:5000]
    if r.warnings:
        tags[names.WARNING] = " | ".join(r.warnings)[:5000]
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
