"""One compression variant end to end, shared by ``accelab compress`` and sweep trials:

dense weights -> baseline measured in this process -> compress -> (early constraint
check) -> optional fine-tune on Ray Train (DDP, AMP) -> finalize -> measure -> MLflow.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from torch import nn

from accelab.checkpoint import MODEL_FILE, load_model_state
from accelab.compress.deploy import save_deployable
from accelab.compress.pipeline import (
    CompressionHooks,
    Deployable,
    calibration_batches,
    compress_for_training,
    finalize,
)
from accelab.compress.prune import sparsity_report
from accelab.config.schema import ExperimentConfig
from accelab.measure import Measurement, compare, evaluate_accuracy, measure, measure_pair
from accelab.registry import resolve_task
from accelab.tracking import log_metrics_once
from accelab.train_loop import LoopHooks, LoopSettings

MB = 1024 * 1024
FINETUNE_PREFIX = "finetune_"  # per-epoch fine-tuning metrics, apart from the final ones


class StopVariant(Exception):
    """Raised by a stage callback to stop before fine-tuning (e.g. a broken constraint)."""


@dataclass
class VariantResult:
    baseline: Measurement
    measurement: Measurement
    metrics: dict[str, float]
    deployable: Deployable


def measure_model(
    model: nn.Module, cfg: ExperimentConfig, test_set, backend: str, simulated: bool
) -> Measurement:
    m = cfg.measure
    return measure(
        model, test_set, backend=backend, simulated=simulated, batch_size=m.batch_size,
        threads=m.threads, warmup=m.warmup, repeats=m.repeats,
    )  # fmt: skip


def measure_against(
    dense: nn.Module, d: Deployable, cfg: ExperimentConfig, test_set
) -> tuple[Measurement, Measurement]:
    """(baseline, variant) measured side by side in this process (see ``measure_pair``)."""
    m = cfg.measure
    return measure_pair(
        dense, d.model, test_set, backend=d.backend, simulated=d.simulated, rounds=m.rounds,
        batch_size=m.batch_size, threads=m.threads, warmup=m.warmup, repeats=m.repeats,
    )  # fmt: skip


def variant_metrics(
    base: Measurement, m: Measurement, float_model: nn.Module, cfg: ExperimentConfig
) -> dict[str, float]:
    """The numbers a variant is judged by (MLflow metrics; n/a speeds left out)."""
    cmp = compare(base, m)
    out = {
        "accuracy": m.accuracy,
        "accuracy_drop": cmp["accuracy_drop"],
        "latency_p50_ms": m.latency_p50_ms,
        "latency_p95_ms": m.latency_p95_ms,
        "throughput_sps": m.throughput_sps,
        "speedup": cmp["speedup"],
        "size_mb": m.size_bytes / MB,
        "size_ratio": cmp["size_ratio"],
        "params": m.params,
        "nonzero_params": m.nonzero_params,
        "macs": m.macs,
        "sparsity": sparsity_report(float_model)["sparsity"],
        "bits": cfg.compression.quant.bits,
        "simulated": float(m.simulated),
        "threads": m.threads,
        "baseline_accuracy": base.accuracy,
        "baseline_latency_p50_ms": base.latency_p50_ms,
        "baseline_size_mb": base.size_bytes / MB,
    }
    return {
        k: float(v)
        for k, v in out.items()
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    }


def finetune(
    cfg: ExperimentConfig,
    dense_weights: Path,
    tracking_uri: str,
    run_id: str | None,
    ray_name: str,
    callbacks=None,
):
    """Fine-tune the compressed model with TorchTrainer (DDP, AMP); returns the fine-tuned state."""
    from accelab.train import build_trainer

    task = resolve_task(cfg.trainable.name)
    n_train = len(task.load_splits(cfg.trainable.data_seed).train)
    steps = math.ceil(n_train / cfg.scaling.num_workers / cfg.train.batch_size)
    hooks = CompressionHooks(cfg.model_dump(mode="json"), str(dense_weights), steps_per_epoch=steps)
    settings = LoopSettings(
        config=cfg.model_dump(mode="json"),
        tracking_uri=tracking_uri,
        mlflow_run_id=run_id,
        hooks=LoopHooks(hooks.transform, hooks.after_step, hooks.extra_metrics),
        epochs=cfg.finetune.epochs,
        lr=cfg.finetune.lr or cfg.train.lr / 10,
        metric_prefix=FINETUNE_PREFIX,
    )
    result = build_trainer(cfg, settings, ray_name, callbacks).fit()
    with result.checkpoint.as_directory() as ckpt:
        return load_model_state(Path(ckpt) / MODEL_FILE), hooks


def run_variant(
    cfg: ExperimentConfig,
    dense_dir: Path,
    *,
    tracking_uri: str,
    run_id: str | None,
    ray_name: str,
    on_compressed: Callable[[VariantResult], None] | None = None,
    train_callbacks: list | None = None,
) -> VariantResult:
    """Run one variant; ``on_compressed`` sees the measured model before any fine-tuning
    and may raise ``StopVariant``."""
    task = resolve_task(cfg.trainable.name)
    splits = task.load_splits(cfg.trainable.data_seed)
    dense = task.build_model(cfg.trainable.model, **cfg.trainable.model_args)
    dense.load_state_dict(load_model_state(dense_dir / MODEL_FILE))
    dense.eval()
    dense_val = evaluate_accuracy(dense, splits.val)

    def judge(model: nn.Module, d: Deployable) -> VariantResult:
        """Test accuracy is reported; selection (constraints, search) uses validation."""
        baseline, m = measure_against(dense, d, cfg, splits.test)
        metrics = variant_metrics(baseline, m, model, cfg)
        metrics["val_accuracy"] = evaluate_accuracy(d.model, splits.val)
        metrics["baseline_val_accuracy"] = dense_val
        metrics["val_accuracy_drop"] = dense_val - metrics["val_accuracy"]
        return VariantResult(baseline, m, metrics, d)

    model = compress_for_training(copy.deepcopy(dense), cfg, task, calibration_batches(task, cfg))
    pre_result = judge(model, finalize(copy.deepcopy(model), cfg))
    if on_compressed:
        on_compressed(pre_result)

    if cfg.finetune.epochs > 0:
        state, hooks = finetune(
            cfg, dense_dir / MODEL_FILE, tracking_uri, run_id, ray_name, train_callbacks
        )
        model = hooks.transform(
            task.build_model(cfg.trainable.model, **cfg.trainable.model_args), task
        )
        model.load_state_dict(state)
        result = judge(model, finalize(copy.deepcopy(model), cfg))
    else:
        result = pre_result  # nothing changed since it was measured
    if run_id:
        log_variant(MlflowClient(tracking_uri), run_id, result, model, cfg)
    return result


def log_variant(
    client: MlflowClient,
    run_id: str,
    r: VariantResult,
    float_model: nn.Module,
    cfg: ExperimentConfig,
) -> None:
    """Final metrics (one row each, step 0 of the variant), tags, and the deployable model."""
    log_metrics_once(client, run_id, 0, r.metrics)
    client.set_tag(run_id, "accelab.backend", r.measurement.backend)
    client.set_tag(run_id, "accelab.simulated", str(r.measurement.simulated).lower())
    client.set_tag(run_id, "accelab.device", r.measurement.device)
    with tempfile.TemporaryDirectory() as tmp:
        q = cfg.compression.quant
        save_deployable(
            r.deployable,
            Path(tmp, "deployable_model"),
            cfg.trainable.model_dump(),
            float_model,
            q.bits,
            q.activations,
        )
        client.log_artifacts(run_id, str(Path(tmp, "deployable_model")), "deployable_model")
    client.set_tag(run_id, "accelab.status", "ok")  # last: "ok" means everything is recorded
