"""A judged variant into its MLflow run: metrics, per-target tags and errors, the deployable
model, and the ONNX files ONNX Runtime targets ran (exports of the run)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from accelab.config.schema import ExperimentConfig
from accelab.tracking import names
from accelab.variant.judge import VariantResult

STATUS_TAG = names.STATUS
MODEL_SHA_TAG = names.MODEL_SHA  # sha256 of the MLflow Model's ONNX file


def log_variant(tracking_uri: str, run_id: str, r: VariantResult, cfg: ExperimentConfig) -> None:
    """Final metrics (one row each, step 0 of the variant), tags, the deployable model and
    the exports; the status tag is written last: "ok" means everything is recorded."""
    from mlflow.tracking import MlflowClient

    from accelab.compress.deploy import save_deployable
    from accelab.tracking.client import log_metrics_once

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
    """The variant as an MLflow Model (ONNX): loadable with mlflow.pyfunc, no accelab code."""
    from accelab.tasks import resolve_task
    from accelab.tracking.models import log_onnx_model
    from accelab.variant.targets import variant_onnx

    task = resolve_task(cfg.trainable.name)
    data, backend, reference = variant_onnx(r, cfg, task)
    # the served file's digest: a rerun that recommends the same model registers no new version
    digest = hashlib.sha256(data).hexdigest()
    tags = {names.BACKEND: backend, names.KIND: "variant", MODEL_SHA_TAG: digest}
    log_onnx_model(tracking_uri, run_id, data, task, reference, tags)


def log_variant_tags(client, run_id: str, r: VariantResult) -> None:
    p = r.primary
    tags = {
        names.BACKEND: p.backend,
        names.SIMULATED: str(p.measurement.simulated).lower(),
        names.DEVICE: p.measurement.device,
        names.TARGETS: json.dumps([[k, t.target.label, t.backend] for k, t in r.targets.items()]),
    }
    for key, t in list(r.targets.items())[1:]:
        tags[names.for_target(names.BACKEND, key)] = t.backend
        if t.error:
            tags[names.for_target(names.TARGET_ERROR, key)] = t.error[:5000]
    if r.warnings:
        tags[names.WARNING] = " | ".join(r.warnings)[:5000]
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
