"""Rank 0's MLflow writer inside a Ray Train worker; every other rank gets a no-op."""

from __future__ import annotations

import tempfile
from pathlib import Path

from torch import nn

from accelab.training.checkpoint import save_model


class Tracker:
    def __init__(self, tracking_uri: str, run_id: str | None, rank: int):
        self.run_id = run_id if rank == 0 else None
        self.client = None
        if self.run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri)

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self.client:
            from accelab.tracking import log_metrics_once

            log_metrics_once(self.client, self.run_id, step, metrics)

    def tags(self, tags: dict[str, str]) -> None:
        if self.client:
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, v)

    def model(self, model: nn.Module) -> None:
        if self.client:
            with tempfile.TemporaryDirectory() as tmp:
                save_model(model, Path(tmp, "model.safetensors"))
                self.client.log_artifact(self.run_id, str(Path(tmp, "model.safetensors")), "model")
