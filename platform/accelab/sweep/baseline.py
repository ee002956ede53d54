"""The sweep's dense baseline: where its weights come from, and the A/A control.

The A/A control times the dense model against a copy of itself, exactly as every trial
is timed against the dense model: its spread is the sweep's noise floor (speedups closer
than that are a tie), and its baseline numbers head the table.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from accelab import training
from accelab.host import device_name
from accelab.stats import noise_floor
from accelab.tracking import names
from accelab.tracking.client import log_metrics_once
from accelab.tracking.runs import storage_path
from accelab.training.checkpoint import META_FILE, read_meta
from accelab.training.launcher import run_training
from accelab.variant.judge import MB, VariantResult, interval, judge, load_dense
from accelab.variant.record import latency_method_tags
from accelab.variant.setup import Setup
from accelab.variant.sources import prepare_source

BASELINE_DIR_TAG = names.BASELINE_DIR
BASELINE_KEY_TAG = names.BASELINE_KEY  # the cache key of the dense model (baseline_key)


def obtain_baseline(
    setup: Setup,
    tracking_uri: str,
    parent_id: str,
    echo: Callable[[str], None],
    retrain: bool = False,
) -> Path:
    """Dense weights: ``sweep.baseline_from``, the one a resumed sweep trained, the cached
    one this config trained before (same key: see ``baseline_key``), or train now."""
    cfg = setup.cfg
    client = MlflowClient(tracking_uri)
    if cfg.sweep.baseline_from:
        dense = prepare_source(setup, cfg.sweep.baseline_from, tracking_uri)
    elif known := client.get_run(parent_id).data.tags.get(BASELINE_DIR_TAG):
        echo(f"baseline: reusing {known}")
        return Path(known)
    elif (cached := cache_dir(setup)).is_dir() and not retrain:
        trained_in = read_meta(cached).get("mlflow_run_id", "?")
        echo(
            f"baseline: reusing the dense model this config trained before ({cached}; key "
            f"{cached.name[:12]}, MLflow run {trained_in}); --retrain trains it again"
        )
        client.set_tag(parent_id, BASELINE_KEY_TAG, cached.name)
        dense = cached
    else:
        echo(f"baseline: training the dense model once for the whole sweep ({cfg.train.precision})")
        dense_cfg = cfg.model_copy(update={"sweep": None})
        outcome = run_training(
            dense_cfg, echo=echo, parent_run_id=parent_id, display_name="baseline-dense-training"
        )
        dense = store_in_cache(Path(outcome.checkpoint_path), setup, outcome.mlflow_run_id)
        client.set_tag(parent_id, BASELINE_KEY_TAG, dense.name)
    client.set_tag(parent_id, BASELINE_DIR_TAG, str(dense))
    return dense


def baseline_key(setup: Setup) -> str:
    """sha256 of everything that determines the dense model: the trainable and its data,
    the training settings, the number of DDP workers, the code (the trainable's module and
    accelab's training loop) and the environment (torch, the device)."""
    cfg, task = setup.cfg, setup.task
    module = sys.modules[task.load_splits.__module__]
    code = [Path(module.__file__)] + sorted(Path(training.__file__).parent.glob("*.py"))
    data = task.describe_data(cfg.trainable.data_seed) if task.describe_data else None
    device = torch.device("cuda" if cfg.scaling.use_gpu else "cpu")
    parts = {
        "trainable": cfg.trainable.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json"),
        "workers": cfg.scaling.num_workers,
        "data": data,
        "code": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in code},
        "env": [torch.__version__, device_name(device) if device.type == "cuda" else "cpu"],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cache_dir(setup: Setup) -> Path:
    """Where the dense model of this key lives (on a shared storage path, so every node
    and every later sweep finds it; a URI storage path caches in ./.accelab_cache)."""
    root = storage_path(setup.cfg)
    base = Path(root) if "://" not in root else Path(".accelab_cache").resolve()
    return base / "baselines" / baseline_key(setup)


def store_in_cache(checkpoint: Path, setup: Setup, run_id: str) -> Path:
    """Copy the trained checkpoint under its key (atomically: a half-copied entry never
    exists); the copy is what the sweep uses, so the Ray run directory may be cleaned."""
    target = cache_dir(setup)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staged = Path(tmp, "entry")
        shutil.copytree(checkpoint, staged)
        meta = read_meta(staged)
        (staged / META_FILE).write_text(json.dumps({**meta, "mlflow_run_id": run_id}))
        staged.rename(target)
    return target


def aa_control(setup: Setup, dense_dir: Path, tracking_uri: str, parent_id: str) -> dict:
    """Judge the dense model against itself on every target, exactly as a trial is judged;
    log the baseline's numbers and each target's noise floor (suffixed like trial metrics)."""
    cfg = setup.cfg
    start = time.perf_counter()
    dense = load_dense(setup, dense_dir)
    plain = cfg.model_copy(update={"compression": type(cfg.compression)()})
    r = judge(dense, copy.deepcopy(dense.model), plain)
    metrics = aa_metrics(r, dense.task.metric.name)
    metrics[names.M_AA_COMPUTE_S] = time.perf_counter() - start
    client = MlflowClient(tracking_uri)
    log_metrics_once(client, parent_id, 0, metrics)
    for key, value in latency_method_tags(r).items():  # how the A/A was timed, per target
        client.set_tag(parent_id, key, value)
    return metrics


def aa_metrics(r: VariantResult, name: str) -> dict[str, float]:
    """The A/A control's numbers from the dense model judged against itself: the baseline's
    quality and size, and per target (suffixed like trial metrics) the dense model's
    latency on that runtime and the speedup against it (~1x): its spread is that target's
    noise floor, so it is never taken against another runtime's dense model."""
    base = r.primary.torch_baseline
    metrics = {
        **{names.baseline(k): v for k, v in interval(name, base.quality).items()},
        names.baseline(names.M_N_TEST): base.quality.n,
        names.baseline(names.M_SIZE_MB): base.size_bytes / MB,
        names.M_AA_COMPUTE_S: 0.0,
    }
    for i, (key, t) in enumerate(r.targets.items()):
        if t.error:
            continue
        sfx = names.suffix(key, primary=i == 0)
        metrics[names.M_BASELINE_LATENCY_P50_MS + sfx] = t.family_baseline.latency_p50_ms
        metrics[names.baseline(names.M_LATENCY_P95_MS) + sfx] = t.family_baseline.latency_p95_ms
        metrics.update(
            {
                names.aa(k) + sfx: v
                for k, v in interval(names.M_SPEEDUP, t.vs_family.speedup).items()
            }
        )
        metrics[names.M_NOISE_FLOOR + sfx] = noise_floor(t.vs_family.speedup)
    return metrics
