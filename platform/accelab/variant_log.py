"""A measured variant into its MLflow run: metrics, tags, warnings and the deployable model."""

from __future__ import annotations

import tempfile
from pathlib import Path

from accelab.config.schema import ExperimentConfig
from accelab.variant import VariantResult

STATUS_TAG = "accelab.status"


def log_variant(tracking_uri: str, run_id: str, r: VariantResult, cfg: ExperimentConfig) -> None:
    """Final metrics (one row each, step 0 of the variant), tags, and the deployable model;
    the status tag is written last: "ok" means everything is recorded."""
    from mlflow.tracking import MlflowClient

    from accelab.compress.deploy import save_deployable
    from accelab.tracking import log_metrics_once

    client = MlflowClient(tracking_uri)
    log_metrics_once(client, run_id, 0, r.metrics)
    log_variant_tags(client, run_id, r)
    with tempfile.TemporaryDirectory() as tmp:
        q = cfg.compression.quant
        directory = Path(tmp, "deployable_model")
        save_deployable(
            r.deployable,
            directory,
            cfg.trainable.model_dump(),
            r.float_model,
            q.bits,
            q.activations,
        )
        client.log_artifacts(run_id, str(directory), "deployable_model")
    client.set_tag(run_id, STATUS_TAG, "ok")


def log_variant_tags(client, run_id: str, r: VariantResult) -> None:
    m = r.measurement
    client.set_tag(run_id, "accelab.backend", m.backend)
    client.set_tag(run_id, "accelab.simulated", str(m.simulated).lower())
    client.set_tag(run_id, "accelab.device", m.device)
    if r.warnings:
        client.set_tag(run_id, "accelab.warning", " | ".join(r.warnings)[:5000])
