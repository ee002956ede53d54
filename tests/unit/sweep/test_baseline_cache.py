"""Reruns are idempotent: the dense baseline is keyed by everything that determines it and
reused by a later sweep of the same config (no training run), unless --retrain."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.sweep.baseline import (
    BASELINE_DIR_TAG,
    BASELINE_KEY_TAG,
    baseline_key,
    cache_dir,
    obtain_baseline,
    store_in_cache,
)
from accelab.training.checkpoint import read_meta, save_checkpoint
from accelab.variant.setup import Setup
from tests.helpers_torch import trained_mlp


def config(tmp_path: Path, **train) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {"run": {"storage_path": str(tmp_path / "results")}, "train": train, "sweep": {}}
    )


def test_the_key_changes_with_what_determines_the_dense_model_only(tmp_path):
    base = config(tmp_path)
    assert baseline_key(Setup.of(base)) == baseline_key(Setup.of(config(tmp_path)))
    assert baseline_key(Setup.of(base)) != baseline_key(Setup.of(config(tmp_path, epochs=3)))
    assert baseline_key(Setup.of(base)) != baseline_key(Setup.of(config(tmp_path, seed=1)))
    other_data = base.model_copy(
        update={"trainable": base.trainable.model_copy(update={"data_seed": 1})}
    )
    assert baseline_key(Setup.of(base)) != baseline_key(Setup.of(other_data))
    workers = base.model_copy(
        update={"scaling": base.scaling.model_copy(update={"num_workers": 1})}
    )
    assert baseline_key(Setup.of(base)) != baseline_key(Setup.of(workers))
    # what only compression or measurement change does not retrain the dense model
    measured = base.model_copy(update={"measure": base.measure.model_copy(update={"rounds": 9})})
    assert baseline_key(Setup.of(base)) == baseline_key(Setup.of(measured))


def test_a_cached_baseline_is_reused_without_training(tmp_path):
    cfg = config(tmp_path)
    model, _ = trained_mlp((32,), epochs=1)
    ckpt = tmp_path / "ray_ckpt"
    save_checkpoint(ckpt, model, {"loop": {}}, {"epoch": 0, "history": [], "trainable": {}})
    cached = store_in_cache(ckpt, Setup.of(cfg), "run-that-trained-it")
    assert (
        cached == cache_dir(Setup.of(cfg))
        and read_meta(cached)["mlflow_run_id"] == "run-that-trained-it"
    )
    assert store_in_cache(ckpt, Setup.of(cfg), "another") == cached  # first entry wins, untouched
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp).info.run_id
    said: list[str] = []
    uri = client.tracking_uri
    assert (
        obtain_baseline(Setup.of(cfg), uri, parent, said.append) == cached
    )  # no Ray, no training run
    assert "reusing the dense model this config trained before" in said[0]
    assert "run-that-trained-it" in said[0] and "--retrain" in said[0]
    tags = client.get_run(parent).data.tags
    assert tags[BASELINE_DIR_TAG] == str(cached) and tags[BASELINE_KEY_TAG] == cached.name
    assert len(client.search_runs([exp])) == 1  # only the parent: nothing was trained
