"""What this process has started, so that a failure message points only at what exists:
the MLflow runs it created and the Ray session it started or joined."""

from __future__ import annotations

import time

t0 = time.time()  # when accelab was first imported in this process (~process start)

mlflow_runs: list[tuple[str, str]] = []  # (tracking URI, run id), in creation order
ray_logs: str | None = None  # the Ray session's log directory, once Ray is up


def hints() -> list[str]:
    out = []
    if mlflow_runs:
        uri, run_id = mlflow_runs[-1]
        out.append(f"the MLflow run {run_id} ({uri}) holds what was recorded")
    if ray_logs:
        out.append(f"Ray's logs are in {ray_logs}")
    return out
