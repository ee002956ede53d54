"""``accelab compress`` with attention-head pruning through the real CLI: half the heads of
a tiny pylm go, one fine-tune epoch recovers on a Ray Train worker, torch and ONNX Runtime
measure the smaller model, and the logged deployable reloads with its new shapes.

The dense model trains in plain torch (100 steps, seconds); only the fine-tune pays for Ray.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import TensorDataset

from accelab.compress.deploy import load_deployable
from accelab.compress.heads import head_counts
from accelab.training.checkpoint import save_checkpoint
from accelab.training.epoch import fit
from tests.conftest import CONFIGS, run_cli
from trainables.base import examples_of
from trainables.pylm import TASK

TINY = {"n_layer": 1, "n_head": 4, "d_model": 32}
TRAINABLE = {"name": "pylm", "model": "gpt", "model_args": TINY, "data_seed": 0}


@pytest.fixture
def dense(tmp_path) -> Path:
    torch.manual_seed(0)
    data = TensorDataset(*examples_of(TASK.load_splits(0).train, 3200))
    model = fit(TASK.build_model("gpt", **TINY), data, 1, loss=TASK.loss, lr=3e-3, batch_size=32)
    meta = {"epoch": 0, "history": [], "trainable": TRAINABLE}
    save_checkpoint(tmp_path / "dense", model, {"loop": {}}, meta)
    return tmp_path / "dense"


@pytest.mark.ray
def test_half_the_heads_go_one_epoch_recovers_and_the_deployable_reloads(dense, store, tmp_path):
    proc = run_cli(
        "compress", str(CONFIGS / "pylm.yaml"), "--from", str(dense), *store["overrides"],
        "trainable.model_args={n_layer: 1, n_head: 4, d_model: 32}",
        "compression.prune.method=heads", "compression.prune.sparsity=0.5",
        "finetune.epochs=1", "scaling.num_workers=1", "measure.batch_size=8",
        "measure.repeats=5", "measure.warmup=1",
        "measure.targets=[{runtime: torch}, {runtime: onnxruntime}]",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "epoch 1/1" in proc.stdout and "attention heads" in proc.stdout, proc.stdout
    client = MlflowClient(store["tracking_uri"])
    run = client.get_run(re.search(r"-> MLflow run ([0-9a-f]{32})", proc.stdout).group(1))
    m = run.data.metrics
    assert run.data.tags["accelab.status"] == "ok"
    dense_params = sum(p.numel() for p in TASK.build_model("gpt", **TINY).parameters())
    assert m["params"] == dense_params - 2 * 8 * (3 * 33 + 32)  # 2 of 4 heads (8 wide) left
    assert math.isfinite(m["perplexity"]) and m["perplexity"] < 256  # better than uniform
    directory = client.download_artifacts(run.info.run_id, "deployable_model", str(tmp_path))
    model = load_deployable(directory)
    assert head_counts(model) == {"blocks.0.attn": 2}
    assert sum(p.numel() for p in model.parameters()) == m["params"]
