"""One Tune trial: sampled knobs -> the same variant pipeline as ``accelab compress``.

Post-training trials run in the trial process (no TorchTrainer start-up); fine-tuning
trials start a TorchTrainer (DDP, AMP) whose per-epoch metrics reach Tune through
``TuneReportCallback`` (so ASHA can cut them). Each trial owns exactly one MLflow child
run, found again by trial id when a resumed sweep re-runs an unfinished trial.

A trial runs in its own Tune process: it makes its own ``Setup`` of its sampled config
(the trainable resolved, its splits loaded once per trial), as the driver did for its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from accelab.config.loader import set_dotted
from accelab.config.schema import Constraints as ConstraintsSection
from accelab.config.schema import ExperimentConfig
from accelab.sweep.pareto import Constraints, TrialPoint, violations
from accelab.sweep.space import SEARCH_QUALITY, assignments
from accelab.tracking import names
from accelab.tracking.client import apply_client_env, log_metrics_once
from accelab.tracking.runs import start_mlflow_run, variant_name
from accelab.variant.judge import MB, VariantResult
from accelab.variant.record import STATUS_TAG, log_variant_tags
from accelab.variant.run import FINETUNE_PREFIX, StopVariant, run_variant
from accelab.variant.setup import Setup

TRIAL_TAG = names.TRIAL_ID


@dataclass(frozen=True)
class SweepContext:
    """What every trial needs besides its sampled values (passed via tune.with_parameters)."""

    base_config: dict[str, Any]
    dense_dir: str
    tracking_uri: str
    parent_run_id: str
    sweep_name: str
    metric: str = "accuracy"
    mlflow_env: dict[str, str] = field(default_factory=dict)  # the driver's MLFLOW_* settings


def trial_config(base_config: dict[str, Any], values: dict[str, Any]) -> ExperimentConfig:
    data = copy.deepcopy({k: v for k, v in base_config.items() if k != "sweep"})
    for key, value in assignments(values).items():
        set_dotted(data, key.split("."), value)
    return ExperimentConfig.model_validate(data)


def child_run(
    ctx: SweepContext, cfg: ExperimentConfig, trial_id: str, values: dict[str, Any]
) -> tuple[str, str]:
    """(run id, status) of this trial's MLflow child run; created on first use only."""
    client = MlflowClient(ctx.tracking_uri)
    parent = client.get_run(ctx.parent_run_id)
    query = (
        f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'"
    )
    found = client.search_runs([parent.info.experiment_id], query, max_results=1)
    if found:
        run, status = found[0], found[0].data.tags.get(STATUS_TAG, "running")
        if status != "ok" and run.info.status != "RUNNING":  # rerun of an interrupted trial
            client.update_run(run.info.run_id, status="RUNNING")
            client.set_tag(run.info.run_id, STATUS_TAG, "running")
        return run.info.run_id, status
    node = ray.get_runtime_context().get_node_id()
    tags = {TRIAL_TAG: trial_id, STATUS_TAG: "running", names.RAY_NODE: node}
    ray_name = f"{ctx.sweep_name}-{trial_id}"
    run_id = start_mlflow_run(
        cfg, ctx.tracking_uri, ray_name, "trial", ctx.parent_run_id, tags, variant_name(cfg)
    )
    searched = assignments(values)
    client.log_batch(run_id, params=[Param(f"searched.{k}", str(v)) for k, v in searched.items()])
    return run_id, "running"


def early_stop_reason(pre: VariantResult, cfg: ExperimentConfig, c: Constraints) -> str | None:
    """Latency and size are final once compressed: a trial that already breaks them is
    not worth fine-tuning. Quality is judged only at the end."""
    m = pre.measurement
    if m.simulated and c.max_latency_ms is not None:
        bits = cfg.compression.quant.bits
        return f"stopped before fine-tuning: latency n/a (simulated, no real {bits}-bit kernel) with max_latency_ms set"
    point = TrialPoint("pre", 0.0, m.latency_p50_ms, m.size_bytes / MB, selection_drop=0.0)
    broken = violations(point, c)
    return "stopped before fine-tuning: " + "; ".join(broken) if broken else None


def tune_metrics(
    metrics: dict[str, float], metric: str, backend: str, status: str, stage: str
) -> dict[str, Any]:
    """What Tune sees (searcher, scheduler, progress line); MLflow keeps the full record.

    ``search_quality`` is the compressed model's validation metric (the test split is
    never used for selection)."""
    return {
        **metrics,
        SEARCH_QUALITY: metrics[names.on_val(metric)],
        # Optuna needs a number for every trial: a simulated variant runs on float kernels here.
        names.M_SEARCH_LATENCY_MS: metrics.get(
            names.M_LATENCY_P50_MS, metrics.get(names.M_BASELINE_LATENCY_P50_MS)
        ),
        "backend": backend,
        "status": status,
        "stage": stage,
    }


def stage_report_callback(carry: dict[str, Any], metric: str):
    """Ray Train -> Tune per-epoch results, each carrying the trial's latest measured
    values (quality, latency of the compressed model) and the epoch's validation metric as
    ``search_quality``: searchers and schedulers need their metrics in every result."""

    class StageReportCallback(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            merged = [stage_result(carry, m, metric) for m in metrics]
            super().after_report(run_context, merged, checkpoint)

    return StageReportCallback()


def stage_result(carry: dict[str, Any], epoch: dict[str, Any], metric: str) -> dict[str, Any]:
    """One fine-tuning epoch as Tune sees it: the carried values, the epoch's metrics, and
    the epoch's validation metric as ``search_quality`` (never the test split)."""
    return {
        **carry, **epoch, SEARCH_QUALITY: epoch[f"{FINETUNE_PREFIX}val_{metric}"],
        "stage": "finetuning",
    }  # fmt: skip


def record_stop(client, run_id: str, pre: VariantResult, reason: str) -> None:
    log_metrics_once(client, run_id, 0, pre.metrics)
    log_variant_tags(client, run_id, pre)
    client.set_tag(run_id, STATUS_TAG, reason)
    client.set_terminated(run_id, "KILLED")


def sweep_trial(config: dict[str, Any], ctx: SweepContext) -> None:
    """Tune function trainable (wrapped with ``tune.with_parameters(ctx=...)``)."""
    apply_client_env(ctx.mlflow_env)  # trials may run on other nodes than the driver
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(ctx.base_config, config)
    run_id, status = child_run(ctx, cfg, trial_id, config)
    client = MlflowClient(ctx.tracking_uri)
    if status == "ok":  # finished before an interrupted sweep saved its state: don't redo it
        done = client.get_run(run_id).data
        backend = done.tags.get(names.BACKEND, "")
        tune.report(tune_metrics(done.metrics, ctx.metric, backend, "ok", "final"))
        return
    section = ConstraintsSection.model_validate(ctx.base_config["sweep"]["constraints"])
    constraints = Constraints(section.quality_drop, section.max_latency_ms, section.max_size_mb)
    carry: dict[str, Any] = {}  # filled before the TorchTrainer (and this callback) is built

    def on_compressed(pre: VariantResult) -> None:
        reason = early_stop_reason(pre, cfg, constraints)
        backend = pre.measurement.backend
        metrics = tune_metrics(pre.metrics, ctx.metric, backend, reason or "ok", "compressed")
        if reason:
            record_stop(client, run_id, pre, reason)
            tune.report(metrics)
            raise StopVariant(reason)
        if cfg.finetune.epochs > 0:
            carry.update(metrics)
            tune.report(metrics)  # a first rung for ASHA before fine-tuning starts

    try:
        result = run_variant(
            Setup.of(cfg), Path(ctx.dense_dir), tracking_uri=ctx.tracking_uri, run_id=run_id,
            ray_name=f"{ctx.sweep_name}-{trial_id}", on_compressed=on_compressed,
            train_callbacks=[stage_report_callback(carry, ctx.metric)],
        )  # fmt: skip
    except StopVariant:
        return
    except KeyboardInterrupt:  # Ctrl-C reached the trial's process: the sweep resumes it
        client.set_tag(run_id, STATUS_TAG, "interrupted")
        client.set_terminated(run_id, "KILLED")
        raise
    except BaseException as exc:
        client.set_tag(run_id, STATUS_TAG, f"failed: {type(exc).__name__}: {exc}"[:500])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    backend = result.measurement.backend
    tune.report(tune_metrics(result.metrics, ctx.metric, backend, "ok", "final"))
