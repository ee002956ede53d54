"""The sweep's dense baseline: where its weights come from, and the A/A control.

The A/A control times the dense model against a copy of itself, exactly as every trial
is timed against the dense model: its spread is the sweep's noise floor (speedups closer
than that are a tie), and its baseline numbers head the table.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.stats import noise_floor
from accelab.variant.judge import MB, interval, load_dense

BASELINE_DIR_TAG = "accelab.baseline_dir"


def obtain_baseline(
    cfg: ExperimentConfig, tracking_uri: str, parent_id: str, echo: Callable[[str], None]
) -> Path:
    """Dense weights: ``sweep.baseline_from``, the one a resumed sweep trained, or train now."""
    from accelab.training.launcher import run_training
    from accelab.variant.sources import prepare_source

    client = MlflowClient(tracking_uri)
    if cfg.sweep.baseline_from:
        dense = prepare_source(cfg, cfg.sweep.baseline_from, tracking_uri)
    elif known := client.get_run(parent_id).data.tags.get(BASELINE_DIR_TAG):
        echo(f"baseline: reusing {known}")
        return Path(known)
    else:
        echo(f"baseline: training the dense model once for the whole sweep ({cfg.train.precision})")
        dense_cfg = cfg.model_copy(update={"sweep": None})
        outcome = run_training(
            dense_cfg, echo=echo, parent_run_id=parent_id, display_name="baseline-dense-training"
        )
        dense = Path(outcome.checkpoint_path)
    client.set_tag(parent_id, BASELINE_DIR_TAG, str(dense))
    return dense


def aa_control(cfg: ExperimentConfig, dense_dir: Path, tracking_uri: str, parent_id: str) -> dict:
    """Judge the dense model against itself on every target, exactly as a trial is judged;
    log the baseline's numbers and each target's noise floor (suffixed like trial metrics)."""
    from accelab.tracking.client import log_metrics_once
    from accelab.variant.judge import judge

    start = time.perf_counter()
    dense = load_dense(cfg, dense_dir)
    plain = cfg.model_copy(update={"compression": type(cfg.compression)()})
    r = judge(dense, copy.deepcopy(dense.model), plain)
    name = dense.task.metric.name
    base = r.primary.torch_baseline
    metrics = {
        **{f"baseline_{k}": v for k, v in interval(name, base.quality).items()},
        "baseline_n_test": base.quality.n,
        "baseline_size_mb": base.size_bytes / MB,
        "aa_compute_s": 0.0,
    }
    for i, (key, t) in enumerate(r.targets.items()):
        if t.error:
            continue
        sfx = "" if i == 0 else f".{key}"
        metrics[f"baseline_latency_p50_ms{sfx}"] = t.family_baseline.latency_p50_ms
        metrics[f"baseline_latency_p95_ms{sfx}"] = t.family_baseline.latency_p95_ms
        metrics.update(
            {f"aa_{k}{sfx}": v for k, v in interval("speedup", t.vs_family.speedup).items()}
        )
        metrics[f"noise_floor{sfx}"] = noise_floor(t.vs_family.speedup)
    metrics["aa_compute_s"] = time.perf_counter() - start
    log_metrics_once(MlflowClient(tracking_uri), parent_id, 0, metrics)
    return metrics
