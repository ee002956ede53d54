"""The variant pipeline without Ray: the right split for each number, the configured
threads, ptq vs qat, recovery of pruned models with the shipped fine-tune defaults, and
the warning when a fine-tune has not recovered."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from accelab.compress.pipeline import compress_for_training, finalize
from accelab.compress.quant import has_fake_quant
from accelab.config.schema import ExperimentConfig
from accelab.measure import evaluate
from accelab.training.checkpoint import save_checkpoint, save_model
from accelab.training.epoch import fit
from accelab.variant.judge import load_dense
from accelab.variant.run import compression_hooks, loss_warning, run_variant
from accelab.variant.setup import Setup
from tests import tasks
from tests.helpers_torch import trained_mlp
from trainables.digits import TASK

FAST = {"rounds": 2, "warmup": 1, "repeats": 5, "targets": [{"runtime": "torch"}]}


def config(name: str, model: str, model_args: dict, **sections) -> ExperimentConfig:
    data = {"trainable": {"name": name, "model": model, "model_args": model_args},
            "measure": {**FAST, **sections.pop("measure", {})}, **sections}  # fmt: skip
    return ExperimentConfig.model_validate(data)


def checkpoint(tmp_path: Path, model, cfg: ExperimentConfig) -> Path:
    directory = tmp_path / "dense"
    save_checkpoint(directory, model, {"loop": {}},
                    {"epoch": 0, "history": [], "trainable": cfg.trainable.model_dump()})  # fmt: skip
    return directory


def test_validation_numbers_come_from_the_validation_split(tmp_path):
    """A task whose validation labels are all wrong: val numbers ~0, test numbers high."""
    cfg = config("tests.tasks:SHIFTED_VAL", "mlp", {"hidden": [64]})
    model = fit(tasks.SHIFTED_VAL.build_model("mlp", hidden=[64]), TASK.load_splits(0).train, 5,
                loss=TASK.loss)  # fmt: skip
    r = run_variant(
        Setup.of(cfg), checkpoint(tmp_path, model, cfg), tracking_uri="", run_id=None, ray_name="x"
    )
    assert r.metrics["accuracy"] > 0.85 and r.metrics["baseline_accuracy"] > 0.85
    assert r.metrics["val_accuracy"] < 0.2 and r.metrics["baseline_val_accuracy"] < 0.2
    assert r.val_quality.n == len(TASK.load_splits(0).val)


@pytest.mark.parametrize("threads", [1, 2])
def test_measure_threads_from_the_config_reach_every_forward_pass(tmp_path, threads):
    cfg = config("tests.tasks:PROBE", "probe", {}, measure={"threads": threads})
    model = tasks.build_probe()
    directory = checkpoint(tmp_path, model, cfg)
    tasks.THREADS_SEEN.clear()
    r = run_variant(Setup.of(cfg), directory, tracking_uri="", run_id=None, ray_name="x")
    assert r.measurement.threads == r.baseline.threads == threads
    assert tasks.THREADS_SEEN and set(tasks.THREADS_SEEN) == {threads}


def quant_cfg(mode: str, bits: int = 4) -> ExperimentConfig:
    return config("digits", "mlp", {"hidden": [128]},
                  compression={"quant": {"bits": bits, "mode": mode, "activations": True}},
                  finetune={"epochs": 1})  # fmt: skip


def test_ptq_fine_tunes_in_fp32_and_qat_through_fake_quant(tmp_path):
    dense, splits = trained_mlp((128,), epochs=3)
    weights = tmp_path / "w.safetensors"
    save_model(dense, weights)
    tuned = {}
    for mode in ("ptq", "qat"):
        cfg = quant_cfg(mode)
        hooks = compression_hooks(cfg, weights, steps=20)
        model = hooks.transform(TASK.build_model("mlp", hidden=[128]), TASK)
        assert has_fake_quant(model) == (mode == "qat")  # what the fine-tune trains through
        fit(model, splits.train, 1, loss=TASK.loss, lr=1e-3, batch_size=64, seed=0)
        d = finalize(model, cfg.compression.quant, Setup.of(cfg).calibration)
        assert d.simulated and has_fake_quant(d.model)  # both ship 4-bit fake-quant weights
        assert not has_fake_quant(model) or mode == "qat"  # finalize left the input alone
        tuned[mode] = d.model
    ptq_w = tuned["ptq"].get_submodule("1").layer.weight
    qat_w = tuned["qat"].get_submodule("1").layer.weight
    assert not torch.equal(ptq_w, qat_w)  # different training, different weights


def test_ptq_calibrates_activations_on_training_data_after_fine_tuning():
    dense, _ = trained_mlp((128,), epochs=3)
    cfg = quant_cfg("ptq")
    calibration = Setup.of(cfg).calibration
    model = compress_for_training(copy.deepcopy(dense), cfg.compression, TASK, calibration)
    assert not has_fake_quant(model)
    d = finalize(model, cfg.compression.quant, calibration)
    observers = [m for m in d.model.modules() if hasattr(m, "initialized")]
    assert observers and all(bool(o.initialized) for o in observers)


SHIPPED = ExperimentConfig()  # the shipped fine-tune defaults


@pytest.mark.parametrize(
    "method, sparsity, schedule", [("unstructured", 0.9, "cubic"), ("structured", 0.5, "oneshot")]
)
def test_shipped_fine_tune_defaults_recover_pruned_models(tmp_path, method, sparsity, schedule):
    """Han et al.'s LeNet-300-100 at 90% unstructured, and 50% of channels, recover to
    within about a point of the dense model in 4 fine-tune epochs (see
    benchmarks/finetune_recovery.py for the measurements behind the defaults)."""
    dense, splits = trained_mlp((300, 100), epochs=8)
    base = evaluate(dense, splits.test, TASK)
    weights = tmp_path / "w.safetensors"
    save_model(dense, weights)
    cfg = config("digits", "mlp", {"hidden": [300, 100]},
                 compression={"prune": {"method": method, "sparsity": sparsity, "schedule": schedule}},
                 finetune={"epochs": 4})  # fmt: skip
    hooks = compression_hooks(cfg, weights, steps=20)
    model = hooks.transform(TASK.build_model("mlp", hidden=[300, 100]), TASK)
    ft = cfg.finetune
    fit(model, splits.train, ft.epochs, loss=TASK.loss, lr=ft.lr, batch_size=64,
        schedule=ft.schedule, after_step=hooks.after_step)  # fmt: skip
    drop_points = (base - evaluate(model, splits.test, TASK)) * 100
    assert drop_points <= 1.5, drop_points
    if method == "unstructured":
        zeros = sum(int((m.weight == 0).sum()) for m in model if isinstance(m, torch.nn.Linear))
        total = sum(m.weight.numel() for m in model if isinstance(m, torch.nn.Linear))
        assert zeros / total > 0.85  # reached the target (output layer kept dense)


def test_a_fine_tune_that_did_not_recover_is_called_out(tmp_path):
    cfg = config("digits", "mlp", {"hidden": [128]}, finetune={"epochs": 2})
    dense_model, _ = trained_mlp((128,), epochs=8)
    dense = load_dense(Setup.of(cfg), checkpoint(tmp_path, dense_model, cfg))
    assert loss_warning(dense, dense_model, cfg) is None
    broken = TASK.build_model("mlp", hidden=[128])  # untrained: loss ~2.3
    text = loss_warning(dense, broken, cfg)
    assert "raise finetune.epochs (now 2) or finetune.lr" in text


def test_bf16_runs_real_bf16_kernels_and_saves_and_reloads(tmp_path):
    """bits 16 ships bf16 weights on torch (named, not simulated), with the dense model's
    MACs and an accuracy within a point; ONNX Runtime targets say it has no backend."""
    from accelab.compress.deploy import load_deployable, save_deployable

    cfg = config("digits", "mlp", {"hidden": [128]}, compression={"quant": {"bits": 16}},
                 measure={"targets": [{"runtime": "torch"}, {"runtime": "onnxruntime"}]})  # fmt: skip
    dense_model, splits = trained_mlp((128,), epochs=4)
    r = run_variant(Setup.of(cfg), checkpoint(tmp_path, dense_model, cfg), tracking_uri="",
                    run_id=None, ray_name="x")  # fmt: skip
    assert r.measurement.backend == "torch-bf16" and not r.measurement.simulated
    assert r.measurement.latency is not None and r.measurement.macs == r.baseline.macs
    assert next(r.deployable.model.parameters()).dtype == torch.bfloat16
    assert abs(r.metrics["accuracy"] - r.metrics["baseline_accuracy"]) <= 0.01
    ort = list(r.targets.values())[1]
    assert ort.error and "no ONNX Runtime backend" in ort.error
    saved = save_deployable(r.deployable, tmp_path / "ship", cfg.trainable.model_dump(),
                            r.float_model, cfg.compression.quant.model_dump())  # fmt: skip
    reloaded = load_deployable(saved)
    x = splits.test.tensors[0][:32]
    with torch.inference_mode():
        assert torch.equal(reloaded(x.bfloat16()), r.deployable.model(x.bfloat16()))
