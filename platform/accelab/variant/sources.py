"""Where a dense model comes from: a checkpoint dir, a Ray Train run dir, an MLflow run, or a
plain weights file trained elsewhere (``weights_file``).

``prepare_source`` resolves and checks it before any Ray work or MLflow run (errors exit 2).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.errors import UsageError
from accelab.tracking.client import tracking_store
from accelab.tracking.runs import storage_path
from accelab.training.checkpoint import META_FILE, MODEL_FILE, load_model_state, read_meta
from accelab.variant.setup import Setup
from accelab.variant.weights_file import first_mismatch, plain_weights, stage_weights


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted(p for p in run_dir.glob("checkpoint_*") if (p / META_FILE).is_file())
    return ckpts[-1] if ckpts else None


def from_mlflow(run_id: str, tracking_uri: str, cache_root: Path) -> Path:
    """Download ``model/model.safetensors`` of a training run into a local checkpoint dir."""
    client = MlflowClient(tracking_store(tracking_uri, f"--from runs:/{run_id}", must_exist=True))
    try:
        client.get_run(run_id)
    except MlflowException:
        raise UsageError(f"--from runs:/{run_id}: no such MLflow run at {tracking_uri}") from None
    target = cache_root / run_id
    if (target / META_FILE).is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root) as tmp:
        try:
            weights = client.download_artifacts(run_id, f"model/{MODEL_FILE}", tmp)
            config = client.download_artifacts(run_id, "config.yaml", tmp)
        except (MlflowException, OSError):
            raise UsageError(
                f"--from runs:/{run_id}: the run has no model/{MODEL_FILE} and config.yaml artifacts"
            ) from None
        staged = Path(tmp, "checkpoint")
        staged.mkdir()
        Path(weights).rename(staged / MODEL_FILE)
        trainable = yaml.safe_load(Path(config).read_text())["trainable"]
        meta = {"trainable": trainable, "source": f"runs:/{run_id}"}
        (staged / META_FILE).write_text(json.dumps(meta))
        staged.rename(target)  # atomic: a half-downloaded cache entry never exists
    return target


def resolve_dense_source(source: str, tracking_uri: str, cache_root: Path) -> Path:
    """A local directory holding ``model.safetensors`` and ``meta.json``."""
    if source.startswith("runs:/"):
        return from_mlflow(
            source[len("runs:/") :].strip("/").split("/")[0], tracking_uri, cache_root
        )
    path = Path(source).expanduser().resolve()  # workers and trials run in other directories
    if not path.exists():
        raise UsageError(f"--from {source}: no such checkpoint directory or weights file")
    if (path / META_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise UsageError(
            f"--from {source}: no accelab checkpoint in it (no {META_FILE}, no checkpoint_*/, "
            f"no {MODEL_FILE})"
        )
    return latest


def check_same_trainable(directory: Path, cfg: ExperimentConfig) -> dict[str, Any]:
    """The checkpoint must come from the config's trainable and model (same shapes), trained
    on the same split (another ``data_seed`` would put its training samples in our test set)."""
    got = read_meta(directory).get("trainable") or {}
    want = cfg.trainable.model_dump()
    keys = ("name", "model", "model_args", "data_seed")
    if any(got.get(k) != want[k] for k in keys):
        have = {k: got.get(k) for k in keys}
        raise UsageError(
            f"--from {directory}: checkpoint is from trainable {have}, but the config's trainable is "
            f"{ {k: want[k] for k in keys} } (trainable.*)"
        )
    return got


def prepare_source(setup: Setup, source: str, tracking_uri: str) -> Path:
    """The dense model's local checkpoint directory, checked against the setup's config."""
    cfg = setup.cfg
    cache = (
        Path(storage_path(cfg)) / "baselines"
        if "://" not in cfg.run.storage_path
        else Path(".accelab_cache").resolve()
    )
    weights = plain_weights(source)
    if weights is not None:  # trained outside accelab: staged as a checkpoint of cfg's model
        dense_dir = stage_weights(weights, source, setup, cache)
    else:
        dense_dir = resolve_dense_source(source, tracking_uri, cache)
    check_same_trainable(dense_dir, cfg)
    check_weights(dense_dir, setup)
    return dense_dir


def check_weights(directory: Path, setup: Setup) -> None:
    """The weights load into the configured model (right names and shapes), now rather
    than after an MLflow run was created."""
    state = load_model_state(directory / MODEL_FILE)
    model = setup.new_model()
    if problem := first_mismatch(state, model):
        raise UsageError(f"{directory / MODEL_FILE}: does not fit the configured model ({problem})")
