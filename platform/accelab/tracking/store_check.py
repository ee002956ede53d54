"""Check an MLflow tracking store before anything is run or recorded (errors exit 2).

- ``sqlite:///path``: the folder must exist and be writable (the file too, if it exists,
  and it must be an SQLite database); a read-only command needs the file to exist, and
  never creates it.
- a plain path or ``file:`` URI: refused. MLflow 3 keeps its file store in maintenance
  mode and raises on first use; point at ``sqlite:///<path>/mlflow.db`` instead.
- ``http(s)://``: the server must answer ``/health`` within a few seconds, and accept the
  credentials from ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or
  ``MLFLOW_TRACKING_TOKEN``, if the server asks for any.
- ``postgresql``/``mysql``/``mssql`` database URIs and ``databricks`` pass through.
"""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.request
from pathlib import Path

from accelab.errors import UsageError

DATABASE_SCHEMES = ("postgresql", "mysql", "mssql", "databricks")
TIMEOUT_S = 5.0


def check_sqlite(uri: str, key: str, must_exist: bool) -> None:
    path = Path(uri[len("sqlite:///") :])
    if must_exist and not path.is_file():
        raise UsageError(f"{key}: no MLflow store at {path} (nothing has been tracked there)")
    if path.is_dir():
        raise UsageError(
            f"{key}: {path} is a directory; give the database file, e.g. {path}/mlflow.db"
        )
    if not path.parent.is_dir():
        raise UsageError(f"{key}: folder {path.parent} does not exist")
    if path.exists():
        with open(path, "rb") as fh:
            head = fh.read(16)
        if head and head != b"SQLite format 3\x00":
            raise UsageError(f"{key}: {path} is not an SQLite database")
        if not must_exist and not os.access(path, os.W_OK):
            raise UsageError(f"{key}: {path} is read-only; MLflow needs to write to it")
    elif not os.access(path.parent, os.W_OK):
        raise UsageError(f"{key}: cannot create {path}: folder {path.parent} is read-only")


def auth_header() -> dict[str, str]:
    user, password = (
        os.environ.get("MLFLOW_TRACKING_USERNAME"),
        os.environ.get("MLFLOW_TRACKING_PASSWORD"),
    )
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}
    return {}


def _get(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 (http(s) only)
        return response.status


def check_server(uri: str, key: str) -> None:
    base = uri.rstrip("/")
    try:
        _get(f"{base}/health", {})
    except urllib.error.HTTPError as exc:
        raise UsageError(
            f"{key}: {base}/health answered HTTP {exc.code}: is this an MLflow server?"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(
            f"{key}: no MLflow server answers at {base} ({reason}); start one (e.g. accelab ui, "
            "or mlflow server on the cluster head) or fix the URI"
        ) from None
    try:
        _get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", auth_header())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise UsageError(
                f"{key}: the MLflow server at {base} refused the request (HTTP {exc.code}); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
            ) from None
    except (urllib.error.URLError, OSError):
        pass  # /health answered: a flaky search is MLflow's to retry, not a config error


def check_tracking_uri(uri: str, key: str = "tracking.uri", must_exist: bool = False) -> str:
    """Raise ``UsageError`` (naming ``key``) unless ``uri`` is a usable MLflow store."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme == "sqlite":
        check_sqlite(uri, key, must_exist)
    elif scheme in ("http", "https"):
        check_server(uri, key)
    elif scheme == "file" or scheme == "":
        raise UsageError(
            f"{key}: {uri}: MLflow's file store is in maintenance mode and refuses new use; "
            "use sqlite:///<folder>/mlflow.db (or an MLflow server)"
        )
    elif not scheme.startswith(DATABASE_SCHEMES):
        raise UsageError(
            f"{key}: {uri}: unknown scheme {scheme!r}; use sqlite:///path/mlflow.db, "
            "http(s)://server, or a postgresql/mysql database URI"
        )
    return uri


def check_shared_stores(cfg, tracking_uri: str, storage: str, nodes: int) -> None:
    """On a multi-node cluster every worker and trial must reach the tracking store and
    the results storage: a file on the driver's disk will not do (exit 2, before any run)."""
    if nodes <= 1:
        return
    problems = []
    if tracking_uri.startswith(("sqlite:", "file:")):
        problems.append(
            f"{cfg.labelled('tracking.uri')}: {tracking_uri} is a file on this node, but the "
            f"cluster has {nodes} nodes whose workers and trials log too; point tracking.uri (or "
            "MLFLOW_TRACKING_URI) at the MLflow server on the head, e.g. http://<head private "
            "IP>:5000 (cluster.yaml starts one)"
        )
    shared = [str(Path(p).expanduser().resolve()) for p in cfg.cluster.shared_paths]
    if "://" not in storage and not any(
        storage == p or storage.startswith(p.rstrip("/") + "/") for p in shared
    ):
        problems.append(
            f"{cfg.labelled('run.storage_path')}: {storage} is on this node's disk, but the "
            f"cluster has {nodes} nodes that write checkpoints; use s3://... or gs://... (or "
            "ACCELAB_STORAGE_PATH), or list a mount every node shares under cluster.shared_paths"
        )
    if problems:
        raise UsageError(problems)
