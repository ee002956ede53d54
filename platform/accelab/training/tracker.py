"""Rank 0's MLflow writer inside a Ray Train worker; every other rank gets a no-op.

A tracking server that goes away must not stop training: writes that fail are kept and
retried in order on the next epoch, and whatever is still missing at the end is in the
checkpoint's history, from which the driver (or ``accelab sync``) records it later.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from accelab.training.checkpoint import save_model


class Tracker:
    def __init__(self, tracking_uri: str, run_id: str | None, rank: int, env: dict[str, str]):
        self.run_id = run_id if rank == 0 else None
        self.client = None
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.pending_tags: dict[str, str] = {}
        self.failures = 0
        if self.run_id:
            from mlflow.tracking import MlflowClient

            from accelab.tracking import apply_client_env

            apply_client_env(env)
            self.client = MlflowClient(tracking_uri)

    def _try(self, write) -> bool:
        try:
            write()
            return True
        except Exception:  # unreachable or failing server: keep the data, keep training
            self.failures += 1
            return False

    def flush(self) -> bool:
        """Write everything pending, oldest first; False if the server still fails."""
        from accelab.tracking import log_metrics_once

        if not self.client:
            return True
        while self.pending:
            step, metrics = self.pending[0]
            write = lambda s=step, m=metrics: log_metrics_once(self.client, self.run_id, s, m)  # noqa: E731
            if not self._try(write):
                return False
            self.pending.pop(0)
        for key in list(self.pending_tags):
            if not self._try(
                lambda k=key: self.client.set_tag(self.run_id, k, self.pending_tags[k])
            ):
                return False
            del self.pending_tags[key]
        return True

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self.client:
            self.pending.append((step, metrics))
            self.flush()

    def tags(self, tags: dict[str, str]) -> None:
        if self.client:
            self.pending_tags.update(tags)
            self.flush()

    def model(self, model: nn.Module) -> None:
        if self.client and self.flush():
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp, "model.safetensors")
                save_model(model, path)
                self._try(lambda: self.client.log_artifact(self.run_id, str(path), "model"))
