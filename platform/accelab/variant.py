"""One compression variant end to end, shared by ``accelab compress`` and sweep trials.

Read top to bottom in ``run_variant``: load the dense model, compress it, measure it next
to the dense model (in this process), let the caller stop early, fine-tune on Ray Train
(DDP, AMP) if asked, finalize (quantize/convert), measure again, log to MLflow.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from accelab.backends import TORCH_FP32
from accelab.compress.pipeline import (
    CompressionHooks,
    Deployable,
    compress_for_training,
    finalize,
    prune_exclude,
)
from accelab.compress.prune import sparsity_report
from accelab.config.schema import ExperimentConfig
from accelab.measure import Comparison, Measurement, TorchRunner, drop, estimate, measure_pair
from accelab.measure import per_example as score
from accelab.registry import resolve_task
from accelab.stats import Estimate
from accelab.training.checkpoint import MODEL_FILE, load_model_state, read_meta
from trainables.base import Splits, Task

MB = 1024 * 1024
FINETUNE_PREFIX = "finetune_"  # per-epoch fine-tuning metrics, apart from the final ones
LOSS_WARN_RATIO = 2.0  # fine-tuned training loss this many times the dense model's: warn


class StopVariant(Exception):
    """Raised by a stage callback to stop before fine-tuning (e.g. a broken constraint)."""


@dataclass
class VariantResult:
    baseline: Measurement
    measurement: Measurement
    comparison: Comparison
    val_quality: Estimate  # the variant's metric on the validation split (for selection)
    val_drop: Estimate  # paired against the dense model on the validation split
    deployable: Deployable
    float_model: nn.Module  # before conversion to low-bit kernels (layer shapes, sparsity)
    metrics: dict[str, float]
    warnings: list[str]


@dataclass
class Dense:
    """The dense model and what every judgement of a variant compares against."""

    model: nn.Module
    task: Task
    splits: Splits
    val_values: Tensor  # the dense model's per-example metric on the validation split
    train_loss: float


def load_dense(cfg: ExperimentConfig, dense_dir: Path) -> Dense:
    task = resolve_task(cfg.trainable.name)
    splits = task.load_splits(cfg.trainable.data_seed)
    model = task.build_model(cfg.trainable.model, **cfg.trainable.model_args)
    model.load_state_dict(load_model_state(dense_dir / MODEL_FILE))
    runner = TorchRunner(model.eval(), TORCH_FP32, threads=cfg.measure.threads)
    return Dense(
        model, task, splits, score(runner, splits.val, task), train_loss(runner, task, splits)
    )


def train_loss(runner: TorchRunner, task: Task, splits: Splits) -> float:
    """The model's mean training loss (eval mode): the yardstick for a fine-tune's loss."""
    x, y = splits.train.tensors
    with runner.active():
        return float(task.loss(runner(x).float(), y))


def runner_for(d: Deployable, cfg: ExperimentConfig) -> TorchRunner:
    return TorchRunner(d.model, d.backend, threads=cfg.measure.threads, simulated=d.simulated)


def judge(dense: Dense, model: nn.Module, cfg: ExperimentConfig) -> VariantResult:
    """Finalize ``model`` and measure it next to the dense model. Test numbers are
    reported; validation numbers are what constraints and searches select on."""
    d = finalize(model, cfg, dense.task)
    base_runner = TorchRunner(dense.model, TORCH_FP32, threads=cfg.measure.threads)
    runner = runner_for(d, cfg)
    base, m, cmp = measure_pair(base_runner, runner, dense.splits.test, dense.task, cfg.measure)
    val_values = score(runner, dense.splits.val, dense.task)
    val_quality = estimate(val_values, dense.task.metric)
    val_drop = drop(dense.val_values, val_values, dense.task.metric)
    result = VariantResult(base, m, cmp, val_quality, val_drop, d, model, {}, [])
    result.metrics = variant_metrics(result, dense, cfg)
    return result


def variant_metrics(r: VariantResult, dense: Dense, cfg: ExperimentConfig) -> dict[str, float]:
    """The numbers a variant is judged by, as MLflow metrics (n/a speeds left out).
    ``<metric>`` is the task's metric (``accuracy`` for digits)."""
    name, base, m, cmp = dense.task.metric.name, r.baseline, r.measurement, r.comparison
    out: dict[str, float | None] = {
        **interval(name, m.quality), "n_test": m.quality.n,
        **interval(f"{name}_drop", cmp.drop),
        **interval(f"val_{name}", r.val_quality), "n_val": r.val_quality.n,
        **interval(f"val_{name}_drop", r.val_drop),
        f"baseline_{name}": base.quality.value,
        f"baseline_val_{name}": estimate(dense.val_values, dense.task.metric).value,
        "latency_p50_ms": m.latency_p50_ms, "latency_p95_ms": m.latency_p95_ms,
        "latency_p50_ms_lo": min(m.latency.rounds_p50_ms) if m.latency else None,
        "latency_p50_ms_hi": max(m.latency.rounds_p50_ms) if m.latency else None,
        "throughput_sps": m.throughput_sps,
        "baseline_latency_p50_ms": base.latency_p50_ms, "baseline_latency_p95_ms": base.latency_p95_ms,
        **(interval("speedup", cmp.speedup) if cmp.speedup else {}),
        "rounds": cfg.measure.rounds,
        "size_mb": m.size_bytes / MB, "baseline_size_mb": base.size_bytes / MB,
        "size_ratio": cmp.size_ratio,
        "packed_size_mb": m.packed_size_bytes / MB if m.packed_size_bytes else None,
        "params": m.params, "nonzero_params": m.nonzero_params, "macs": m.macs,
        # zeros among the weights this variant prunes (the output layer and exclude kept dense)
        "sparsity": sparsity_report(r.float_model, prune_exclude(r.float_model, cfg))["sparsity"],
        "overall_sparsity": sparsity_report(r.float_model)["sparsity"],
        "bits": cfg.compression.quant.bits, "simulated": float(m.simulated),
        "threads": m.threads, "batch_size": m.batch_size,
    }  # fmt: skip
    return {k: float(v) for k, v in out.items() if v is not None and not math.isnan(float(v))}


def interval(name: str, e: Estimate) -> dict[str, float]:
    return {name: e.value, f"{name}_lo": e.lo, f"{name}_hi": e.hi}


def finetune(
    cfg: ExperimentConfig,
    dense: Dense,
    dense_weights: Path,
    tracking_uri: str,
    run_id: str | None,
    ray_name: str,
    callbacks=None,
) -> tuple[nn.Module, float | None]:
    """Fine-tune the compressed model with TorchTrainer (DDP, AMP). Returns the fine-tuned
    model (rebuilt here from the checkpoint) and the seconds its training loop took."""
    from accelab.tracking import client_env
    from accelab.training.launcher import build_trainer
    from accelab.training.loop import LoopHooks, LoopSettings

    steps = math.ceil(len(dense.splits.train) / cfg.scaling.num_workers / cfg.train.batch_size)
    hooks = CompressionHooks(cfg.model_dump(mode="json"), str(dense_weights), steps_per_epoch=steps)
    settings = LoopSettings(
        config=cfg.model_dump(mode="json"),
        tracking_uri=tracking_uri,
        mlflow_run_id=run_id,
        hooks=LoopHooks(hooks.transform, hooks.after_step, hooks.extra_metrics),
        epochs=cfg.finetune.epochs,
        lr=cfg.finetune.lr,
        metric_prefix=FINETUNE_PREFIX,
        schedule=cfg.finetune.schedule,
        mlflow_env=client_env(),
    )
    result = build_trainer(cfg, settings, ray_name, callbacks).fit()
    with result.checkpoint.as_directory() as ckpt:
        state = load_model_state(Path(ckpt) / MODEL_FILE)
        history = read_meta(Path(ckpt))["history"]
    task = dense.task
    model = hooks.transform(task.build_model(cfg.trainable.model, **cfg.trainable.model_args), task)
    model.load_state_dict(state)
    return model, sum(row["metrics"][f"{FINETUNE_PREFIX}epoch_s"] for row in history)


def loss_warning(dense: Dense, model: nn.Module, cfg: ExperimentConfig) -> str | None:
    """A fine-tune that ends far above the dense model's training loss has not recovered."""
    loss = train_loss(TorchRunner(copy.deepcopy(model)), dense.task, dense.splits)
    if loss <= LOSS_WARN_RATIO * dense.train_loss + 0.05:
        return None
    return (
        f"fine-tuned training loss {loss:.3f} is far above the dense model's "
        f"{dense.train_loss:.3f}: the model has not recovered; raise finetune.epochs "
        f"(now {cfg.finetune.epochs}) or finetune.lr (now {cfg.finetune.lr:g}), or lower "
        f"compression.prune.sparsity (now {cfg.compression.prune.sparsity:g})"
    )


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
    dense = load_dense(cfg, dense_dir)
    start = time.perf_counter()
    model = compress_for_training(copy.deepcopy(dense.model), cfg, dense.task)
    result = judge(dense, model, cfg)
    compute = time.perf_counter() - start  # this variant's own work, without start-ups
    if on_compressed:
        on_compressed(result)
    if cfg.finetune.epochs > 0:
        model, loop_s = finetune(
            cfg, dense, dense_dir / MODEL_FILE, tracking_uri, run_id, ray_name, train_callbacks
        )
        start = time.perf_counter()
        result = judge(dense, model, cfg)
        compute += loop_s + time.perf_counter() - start
        if warning := loss_warning(dense, model, cfg):
            result.warnings.append(warning)
    result.metrics["compute_s"] = compute
    if run_id:
        from accelab.variant_log import log_variant

        log_variant(tracking_uri, run_id, result, cfg)
    return result
