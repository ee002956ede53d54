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
from accelab.measure import TORCH_FP32, TorchRunner, measure_pair
from accelab.stats import noise_floor
from accelab.variant import MB, interval, load_dense

BASELINE_DIR_TAG = "accelab.baseline_dir"


def obtain_baseline(
    cfg: ExperimentConfig, tracking_uri: str, parent_id: str, echo: Callable[[str], None]
) -> Path:
    """Dense weights: ``sweep.baseline_from``, the one a resumed sweep trained, or train now."""
    from accelab.sources import prepare_source
    from accelab.training.launcher import run_training

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
    """Measure the dense model against itself; log baseline numbers and the noise floor."""
    from accelab.tracking import log_metrics_once

    start = time.perf_counter()
    dense = load_dense(cfg, dense_dir)
    threads = cfg.measure.threads
    a = TorchRunner(dense.model, TORCH_FP32, threads=threads)
    b = TorchRunner(copy.deepcopy(dense.model), TORCH_FP32, threads=threads)
    base, _, cmp = measure_pair(a, b, dense.splits.test, dense.task, cfg.measure)
    name = dense.task.metric.name
    metrics = {
        **{f"baseline_{k}": v for k, v in interval(name, base.quality).items()},
        "baseline_n_test": base.quality.n,
        "baseline_latency_p50_ms": base.latency_p50_ms,
        "baseline_latency_p95_ms": base.latency_p95_ms,
        "baseline_size_mb": base.size_bytes / MB,
        **{f"aa_{k}": v for k, v in interval("speedup", cmp.speedup).items()},
        "noise_floor": noise_floor(cmp.speedup),
        "aa_compute_s": time.perf_counter() - start,
    }
    log_metrics_once(MlflowClient(tracking_uri), parent_id, 0, metrics)
    return metrics
