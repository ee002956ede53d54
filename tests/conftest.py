"""Shared fixtures: real Ray (local), real MLflow (sqlite in a temp dir), real digits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    """A fresh MLflow store and Ray storage path, as config overrides."""
    return {
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "overrides": [
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"run.storage_path={tmp_path / 'results'}",
        ],
    }


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_end():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run the real ``accelab`` CLI in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "accelab", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
