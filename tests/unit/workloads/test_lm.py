"""The second workload: a byte-level transformer language model of Python source, on a tiny
configuration of the same model (seconds): its data, training, pruning, quantization, and
judging on every backend with perplexity (lower is better) instead of accuracy."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from accelab.compress.pipeline import compress_for_training
from accelab.config.schema import ExperimentConfig
from accelab.errors import ConfigError
from accelab.preflight import load_config
from accelab.stats import Estimate
from accelab.sweep.pareto import Constraints
from accelab.sweep.summary import MetricInfo, TrialRow, build_summary
from accelab.training.checkpoint import load_model_state, save_checkpoint
from accelab.training.epoch import fit
from accelab.variant.judge import judge, load_dense
from accelab.variant.setup import Setup
from tests.conftest import CONFIGS
from trainables import pylm
from trainables.pylm import TASK
from trainables.splits import examples_of

TINY = {"n_layer": 1, "n_head": 2, "d_model": 32}
TRAINABLE = {"name": "pylm", "model": "gpt", "model_args": TINY, "data_seed": 0}
TARGETS = [{"runtime": "torch"}, {"runtime": "onnxruntime"},
           {"runtime": "onnxruntime", "mode": "generate", "tokens": 4}]  # fmt: skip


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    """The tiny model after 100 steps on 3,200 training sequences (a few seconds)."""
    torch.manual_seed(0)
    splits = TASK.load_splits(0)
    model = fit(TASK.build_model("gpt", **TINY), TensorDataset(*examples_of(splits.train, 3200)), 1,
                loss=TASK.loss, lr=3e-3, batch_size=32)  # fmt: skip
    directory = tmp_path_factory.mktemp("lm") / "dense"
    save_checkpoint(
        directory, model, {"loop": {}}, {"epoch": 0, "history": [], "trainable": TRAINABLE}
    )
    return directory


def config(**sections) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": TRAINABLE,
        "measure": {"batch_size": 8, "rounds": 2, "repeats": 5, "warmup": 1, "targets": TARGETS},
        **sections,
    })  # fmt: skip


def test_the_corpus_is_real_code_split_by_file_and_described():
    d = TASK.describe_data(0)
    assert d["python"] and d["sha256"] and d["context"] == 128
    assert d["files"]["train"] > 400 and d["files"]["val"] > 15 and d["files"]["test"] > 15
    assert d["sequences"]["test"] == len(TASK.load_splits(0).test) > 1000
    # a file belongs to exactly one split, by a fixed rule on its path
    names = [rel for rel, _ in pylm.stdlib_files()]
    assert {pylm.split_of(n) for n in names} == {"train", "val", "test"}
    assert all(pylm.split_of(n) == pylm.split_of(n) for n in names[:50])
    x, y = examples_of(TASK.load_splits(0).train, 1)
    assert x.dtype == torch.int64 and torch.equal(x[0, 1:], y[0, :-1])  # next-byte targets
    assert b"def " in b"".join(
        bytes(row.tolist()) for row in examples_of(TASK.load_splits(0).train, 200)[0]
    )


def test_training_lowers_perplexity_and_the_metric_points_down(dense):
    splits = TASK.load_splits(0)
    trained = TASK.build_model("gpt", **TINY)
    trained.load_state_dict(load_model_state(dense / "model.safetensors"))
    x, y = examples_of(splits.val, 64)
    with torch.no_grad():
        before = torch.exp(TASK.per_example(TASK.build_model("gpt", **TINY)(x), y).mean())
        after = torch.exp(TASK.per_example(trained(x), y).mean())
    assert before > 200 and after < 30  # from ~uniform over 256 bytes to a useful model
    assert TASK.metric.name == "perplexity" and not TASK.metric.higher_is_better


def test_structured_pruning_removes_mlp_hidden_units_and_keeps_the_residual_width(dense):
    cfg = config(compression={"prune": {"method": "structured", "sparsity": 0.5}})
    d = load_dense(Setup.of(cfg), dense)
    pruned = compress_for_training(copy.deepcopy(d.model), cfg.compression, TASK, d.calibration)
    shapes = {
        n: tuple(m.weight.shape)
        for n, m in pruned.named_modules()
        if isinstance(m, torch.nn.Linear)
    }
    assert shapes["blocks.0.mlp.fc1"] == (64, 32) and shapes["blocks.0.mlp.fc2"] == (32, 64)
    assert shapes["blocks.0.attn.q"] == (32, 32) and shapes["head"] == (256, 32)
    assert pruned(TASK.example_input(2)).shape == (2, 128, 256)


def test_every_backend_judges_the_language_model_with_perplexity(dense, tmp_path):
    cfg = config(
        compression={"quant": {"bits": 8}, "prune": {"method": "unstructured", "sparsity": 0.5}}
    )
    d = load_dense(Setup.of(cfg), dense)
    r = judge(
        d, compress_for_training(copy.deepcopy(d.model), cfg.compression, TASK, d.calibration), cfg
    )
    assert [t.backend for t in r.targets.values()] == [
        "torch-int8-x86",
        "ort-int8-dynamic",
        "ort-int8-dynamic",
    ]
    assert all(t.error is None for t in r.targets.values())
    m = r.metrics
    # perplexity and its relative drop (0.01 = 1% higher perplexity), next-byte accuracy
    assert 5 < m["perplexity"] < 60 and m["perplexity_lo"] < m["perplexity"] < m["perplexity_hi"]
    assert abs(m["perplexity_drop"]) < 0.2 and 0.1 < m["next_byte_accuracy"] < 0.6
    assert m["batch_size.ort_gen"] == 1.0 and m["latency_p50_ms.ort_gen"] > 0  # per new byte
    assert m["export_max_abs_diff.ort_b8"] < 1e-3
    # shipped as an MLflow Model that takes token ids (int64), loadable without accelab
    import mlflow

    from accelab.tracking.models import log_onnx_model
    from accelab.variant.targets import variant_onnx

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = (
        mlflow.MlflowClient(uri)
        .create_run(mlflow.MlflowClient(uri).create_experiment("lm", f"{tmp_path}/artifacts"))
        .info.run_id
    )
    data, backend, _ = variant_onnx(r, cfg, TASK)
    model_uri = log_onnx_model(uri, run_id, data, TASK, r.float_model, {"accelab.backend": backend})
    mlflow.set_tracking_uri(uri)
    ids = examples_of(TASK.load_splits(0).test, 3)[0].numpy()
    logits = mlflow.pyfunc.load_model(model_uri).predict(ids)
    logits = next(iter(logits.values())) if isinstance(logits, dict) else logits
    assert ids.dtype.kind == "i" and logits.shape[:2] == ids.shape


def test_a_worse_model_has_a_positive_drop_and_selection_prefers_lower_perplexity():
    from accelab.measure.quality import drop

    base = torch.tensor([2.0, 2.0, 2.0, 2.0], dtype=torch.float64)  # per-sequence losses (nats)
    worse = base + 0.1
    d = drop(base, worse, TASK.metric)
    assert d.value == pytest.approx(math.exp(0.1) - 1, rel=1e-6)  # +10.5% perplexity
    rows = [
        TrialRow("a", q=8.0, val_q_drop=0.05, latency_p50_ms=1.0, size_mb=1.0, speedup=3.0),
        TrialRow("b", q=7.5, val_q_drop=0.01, latency_p50_ms=1.2, size_mb=1.0, speedup=2.5),
    ]
    metric = MetricInfo("perplexity", higher_is_better=False, relative_drop=True)
    s = build_summary(
        "p", ("torch_b16", "torch"), metric, {"noise_floor": 0.0}, Constraints(0.02), [], rows
    )
    assert s.recommended.trial_id == "b"  # a breaks the 2% constraint on validation
    assert [r.trial_id for r in s.rows if r.on_front] == ["a", "b"]  # lower ppl is better
    assert isinstance(d, Estimate)


def test_shipped_language_model_configs_validate_and_generation_needs_a_language_model():
    cfg = load_config(CONFIGS / "pylm_sweep.yaml")
    assert cfg.sweep.constraints.quality_drop == 0.02
    with pytest.raises(ConfigError, match="mode generate needs a language model"):
        load_config(CONFIGS / "digits.yaml", ["measure.targets=[{runtime: torch, mode: generate}]"])
