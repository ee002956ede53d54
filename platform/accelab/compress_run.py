"""``accelab compress``: one variant of a trained model, measured next to its baseline."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from accelab.config.schema import ExperimentConfig
from accelab.measure import Measurement
from accelab.variant import FINETUNE_PREFIX, VariantResult


def prepare_source(cfg: ExperimentConfig, source: str, tracking_uri: str) -> Path:
    """Resolve and check the dense model before any Ray work (errors exit 2)."""
    from accelab.baseline import check_same_trainable, resolve_dense_source
    from accelab.train import storage_path

    cache = (
        Path(storage_path(cfg)) / "baselines"
        if "://" not in cfg.run.storage_path
        else Path(".accelab_cache").resolve()
    )
    dense_dir = resolve_dense_source(source, tracking_uri, cache)
    check_same_trainable(dense_dir, cfg)
    return dense_dir


def run_compress(
    cfg: ExperimentConfig, source: str, echo: Callable[[str], None] = print
) -> tuple[str, VariantResult]:
    from mlflow.tracking import MlflowClient

    from accelab import resources
    from accelab.progress import EpochProgress
    from accelab.ray_session import init_ray, will_start_local_ray
    from accelab.tracking import resolve_tracking_uri
    from accelab.train import start_mlflow_run
    from accelab.variant import run_variant

    tracking_uri = resolve_tracking_uri(cfg.tracking.uri)
    dense_dir = prepare_source(cfg, source, tracking_uri)
    if cfg.finetune.epochs > 0:
        if will_start_local_ray():
            resources.check_placement(cfg, resources.local_nodes(), "this machine")
        init_ray()
        resources.check_placement(cfg, resources.cluster_nodes(), "the Ray cluster")
    name = f"{cfg.run_name}-compress-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = start_mlflow_run(cfg, tracking_uri, name, "compress")
    client = MlflowClient(tracking_uri)
    client.set_tag(run_id, "accelab.dense_source", str(source))
    echo(f"compressing {dense_dir} ({describe(cfg)}) -> MLflow run {run_id}")
    try:
        with EpochProgress(tracking_uri, run_id, cfg.finetune.epochs, echo, prefix=FINETUNE_PREFIX):
            result = run_variant(
                cfg, dense_dir, tracking_uri=tracking_uri, run_id=run_id, ray_name=name
            )
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    echo(format_comparison(result))
    return run_id, result


def describe(cfg: ExperimentConfig) -> str:
    p, q = cfg.compression.prune, cfg.compression.quant
    parts = []
    if p.method != "none":
        parts.append(
            f"{p.method} pruning {p.sparsity:g} ({p.scope if p.method == 'unstructured' else 'channels'}, {p.schedule})"
        )
    if q.bits < 32:
        parts.append(f"{q.bits}-bit {q.mode}{' + activations' if q.activations else ''}")
    parts.append(f"fine-tune {cfg.finetune.epochs} epoch(s)")
    return ", ".join(parts)


def _cell(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_comparison(r: VariantResult) -> str:
    """Baseline and variant side by side; speedup only where both ran real kernels."""
    rows = [("", "dense fp32 (baseline)", "variant")]

    def add(label: str, get: Callable[[Measurement], object], spec: str) -> None:
        rows.append((label, _cell(get(r.baseline), spec), _cell(get(r.measurement), spec)))

    rows.append(("backend", r.baseline.backend, r.measurement.backend))
    add("test accuracy", lambda m: m.accuracy, ".4f")
    add("latency p50 ms", lambda m: m.latency_p50_ms, ".3f")
    add("latency p95 ms", lambda m: m.latency_p95_ms, ".3f")
    add("throughput samples/s", lambda m: m.throughput_sps, ",.0f")
    add("params", lambda m: m.params, ",d")
    add("nonzero params", lambda m: m.nonzero_params, ",d")
    add("size KB", lambda m: m.size_bytes / 1024, ",.1f")
    add("MACs / sample", lambda m: m.macs, ",d")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    speed = r.metrics.get("speedup")
    speed_text = (
        "n/a (simulated: no real low-bit kernel here)"
        if r.measurement.simulated
        else f"{speed:.2f}x"
    )
    if not r.measurement.simulated and r.metrics.get("sparsity", 0.0) > 0:
        speed_text += " (dense kernels: zeroed weights are still computed, sparsity is not faster)"
    lines.append(
        f"speedup {speed_text}, size ratio {r.metrics['size_ratio']:.3f}, accuracy drop "
        f"{r.metrics['accuracy_drop'] * 100:+.2f} points, sparsity {r.metrics['sparsity']:.3f} "
        f"({r.measurement.device}, {r.measurement.threads} thread(s), batch {r.measurement.batch_size})"
    )
    return "\n".join(lines)
