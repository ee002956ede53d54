"""``accelab sync``: complete a run's MLflow record from its checkpoint (after the
tracking server was unreachable until the end of a training)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlflow.tracking import MlflowClient

from accelab.errors import UsageError
from accelab.tracking.store_check import check_tracking_uri
from accelab.training.checkpoint import META_FILE, MODEL_FILE, load_model_state, read_meta
from accelab.training.sync import sync_checkpoint
from accelab.variant.sources import latest_checkpoint


def sync(path: str, tracking_uri: str | None, echo: Callable[[str], None] = print) -> None:
    directory = Path(path).expanduser().resolve()
    if not directory.is_dir():
        raise UsageError(f"{path}: no such checkpoint or Ray run directory")
    if not (directory / META_FILE).is_file():
        directory = latest_checkpoint(directory) or directory
    meta = read_meta(directory)
    verify_weights(directory)
    uri = tracking_uri or (meta.get("mlflow") or {}).get("tracking_uri")
    if uri:
        check_tracking_uri(uri, "--tracking-uri" if tracking_uri else f"{directory}/meta.json")
    result = sync_checkpoint(directory, uri)
    finished = meta.get("epoch") == meta.get("epochs", 0) - 1
    client = MlflowClient(result.tracking_uri)
    if finished and client.get_run(result.run_id).info.status != "FINISHED":
        client.set_terminated(result.run_id, "FINISHED")
    steps = [s + 1 for s in result.written_steps]
    echo(
        f"synced {directory} -> MLflow run {result.run_id} ({result.tracking_uri}): "
        f"{'epochs ' + str(steps) if steps else 'no missing epochs'}"
        f"{', model uploaded' if result.model_uploaded else ''}"
        f"{', run marked FINISHED' if finished else ''}"
    )


def verify_weights(directory: Path) -> None:
    """The checkpoint's weights load: a truncated or corrupt file is not synced as if it
    were the run's model."""
    try:
        load_model_state(directory / MODEL_FILE)
    except UsageError as exc:
        raise UsageError(f"{exc.messages[0]}; nothing was synced") from None
