"""Rank 0's MLflow writer inside a Ray Train worker; every other rank gets a no-op.

A tracking server that goes away must not stop training: writes that fail are kept and
retried in order on the next epoch, and whatever is still missing at the end is in the
checkpoint's history, from which the driver (or ``accelab sync``) records it later.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from pathlib import Path
from typing import Any

from torch import nn

from accelab.training.checkpoint import save_model


class Tracker:
    """Created first thing on every rank; rank 0 connects to MLflow in a background thread
    (importing MLflow and opening the store takes seconds) while the rest of the worker
    sets up DDP, and waits for it only when it first writes."""

    def __init__(self, tracking_uri: str, run_id: str | None, rank: int, env: dict[str, str]):
        self.run_id = run_id if rank == 0 else None
        self._client = None
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.pending_tags: dict[str, str] = {}
        self.failures = 0
        self._connect = None
        if self.run_id:
            self._connect = threading.Thread(
                target=self._open, args=(tracking_uri, env), daemon=True, name="accelab-mlflow"
            )
            self._connect.start()

    def _open(self, tracking_uri: str, env: dict[str, str]) -> None:
        # MLflow is imported here, in the connecting thread, while the worker loads its
        # data and model: its imports (~115 MB, seconds) are paid only by a rank that logs
        from mlflow.tracking import MlflowClient

        from accelab.tracking.client import apply_client_env

        apply_client_env(env)
        client = MlflowClient(tracking_uri)
        with contextlib.suppress(Exception):  # open the store now (it may be down: fine)
            client.get_run(self.run_id)
        self._client = client

    @property
    def client(self):
        if self._connect is not None:
            self._connect.join()
            self._connect = None
        return self._client

    def _try(self, write) -> bool:
        try:
            write()
            return True
        except Exception:  # unreachable or failing server: keep the data, keep training
            self.failures += 1
            return False

    def flush(self) -> bool:
        """Write everything pending, oldest first; False if the server still fails."""
        from accelab.tracking.client import log_metrics_once  # MLflow: see ``_open``

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
