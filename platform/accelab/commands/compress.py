"""``accelab compress``: one variant of a trained model, measured next to its baseline."""

from __future__ import annotations

from collections.abc import Callable

from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.errors import collect
from accelab.measure import Measurement
from accelab.measure.quality import drop_unit, format_drop
from accelab.preflight import check_measure_device, check_storage_path
from accelab.tracking import names
from accelab.tracking.client import tracking_store
from accelab.tracking.runs import mark_failed, new_ray_name, start_mlflow_run, variant_name
from accelab.training import resources
from accelab.training.launcher import joined
from accelab.training.progress import EpochProgress
from accelab.training.ray_session import init_ray
from accelab.variant.run import FINETUNE_PREFIX, VariantResult, run_variant
from accelab.variant.setup import Setup
from accelab.variant.sources import prepare_source


def run_compress(
    cfg: ExperimentConfig, source: str, echo: Callable[[str], None] = print
) -> tuple[str, VariantResult]:
    setup = Setup.of(cfg)  # the trainable resolved once; its splits loaded once, when needed
    tracking_uri = tracking_store(cfg.tracking.uri, cfg.labelled("tracking.uri"))
    dense_dir, *_ = collect(
        lambda: prepare_source(setup, source, tracking_uri),
        lambda: resources.check_before_ray(cfg) if cfg.finetune.epochs > 0 else None,
        lambda: check_measure_device(cfg),
        lambda: check_storage_path(cfg),
    )
    if cfg.finetune.epochs > 0:
        init_ray(cfg)
        joined(cfg, tracking_uri, echo)
    elif setup.task.ray_data:  # its splits are read with Ray Data: a quiet Ray, not an implicit one
        init_ray(cfg)
    name = new_ray_name(cfg, "compress")
    display = f"compress-{variant_name(cfg)}"
    run_id = start_mlflow_run(cfg, tracking_uri, name, "compress", display_name=display)
    client = MlflowClient(tracking_uri)
    client.set_tag(run_id, names.DENSE_SOURCE, str(source))
    echo(f"compressing {dense_dir} ({describe(cfg)}) -> MLflow run {run_id}")
    task_metric = setup.task.metric
    metric = task_metric.name
    try:
        with EpochProgress(
            tracking_uri, run_id, cfg.finetune.epochs, echo, prefix=FINETUNE_PREFIX, metric=metric
        ):
            result = run_variant(
                setup, dense_dir, tracking_uri=tracking_uri, run_id=run_id, ray_name=name
            )
    except BaseException as exc:
        mark_failed(tracking_uri, run_id, exc)
        raise
    client.set_terminated(run_id, "FINISHED")
    echo(format_comparison(result, metric, task_metric.transform == "exp"))
    echo(format_targets(result, metric))
    for note in result.notes:
        echo(note)
    for warning in result.warnings:
        echo(f"warning: {warning}")
    return run_id, result


def describe(cfg: ExperimentConfig) -> str:
    p, q = cfg.compression.prune, cfg.compression.quant
    parts = []
    if p.method != "none":
        kind = {"unstructured": p.scope, "heads": "attention heads"}.get(p.method, "channels")
        parts.append(f"{p.method} pruning {p.sparsity:g} ({kind}, {p.schedule})")
    if q.bits < 32:
        parts.append(f"{q.label} {q.mode}{' + activations' if q.activations else ''}")
    parts.append(f"fine-tune {cfg.finetune.epochs} epoch(s)")
    return ", ".join(parts)


def _cell(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_comparison(r: VariantResult, metric: str = "accuracy", relative: bool = False) -> str:
    """Baseline and variant side by side; speedup only where both ran real kernels.
    ``relative``: the metric's drop is relative (perplexity: percent), else in points."""
    rows = [("", "dense fp32 (baseline)", "variant")]

    def add(label: str, get: Callable[[Measurement], object], spec: str) -> None:
        rows.append((label, _cell(get(r.baseline), spec), _cell(get(r.measurement), spec)))

    rows.append(("backend", r.baseline.backend, r.measurement.backend))
    rows.append((f"test {metric} [95% CI]", r.baseline.quality.fmt(), r.measurement.quality.fmt()))
    add("latency p50 ms", lambda m: m.latency_p50_ms, ".3f")
    add("latency p95 ms", lambda m: m.latency_p95_ms, ".3f")
    add("throughput samples/s", lambda m: m.throughput_sps, ",.0f")
    add("params", lambda m: m.params, ",d")
    add("nonzero params", lambda m: m.nonzero_params, ",d")
    add("size KB (file)", lambda m: m.size_bytes / 1024, ",.1f")
    if r.measurement.packed_size_bytes:
        rows.append(("packed KB (computed)", "", f"{r.measurement.packed_size_bytes / 1024:,.1f}"))
    add("MACs / sample", lambda m: m.macs, ",d")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    cmp, m = r.comparison, r.measurement
    if m.simulated or cmp.speedup is None:
        speed_text = "n/a (simulated: no real low-bit kernel here)"
    else:
        s = cmp.speedup
        speed_text = f"{s.value:.2f}x (95% CI {s.lo:.2f}-{s.hi:.2f})"
    if not m.simulated and r.metrics.get(names.M_SPARSITY, 0.0) > 0:
        speed_text += " (dense kernels: zeroed weights are still computed, sparsity is not faster)"
    d, vd, unit = cmp.drop, r.val_drop, drop_unit(relative)
    lines.append(
        f"speedup {speed_text}, size ratio {cmp.size_ratio:.3f}, test drop "
        f"{format_drop(d.value, d.lo, d.hi, relative)} {unit} on {d.n} examples "
        f"(validation drop {format_drop(vd.value, relative=relative)} {unit}), "
        f"sparsity {r.metrics[names.M_SPARSITY]:.3f} "
        f"({m.device}, {m.threads} thread(s), batch {m.batch_size})"
    )
    return "\n".join(lines)


def format_targets(r: VariantResult, metric: str) -> str:
    """Every deployment target in one line each: the variant's backend, quality and latency
    against the dense model on the same runtime and against dense torch fp32."""
    rows = [("target", "backend", metric, "p50 ms", "dense ms", "speedup [95% CI]", "vs torch")]
    for t in r.targets.values():
        if t.error:
            rows.append((t.target.label, t.backend, "", "", "", f"n/a: {t.error[:80]}", ""))
            continue
        m, fam, s, st = t.measurement, t.family_baseline, t.vs_family.speedup, t.vs_torch.speedup
        rows.append((
            t.target.label, t.backend, f"{m.quality.value:.4f}", _cell(m.latency_p50_ms, ".3f"),
            _cell(fam.latency_p50_ms, ".3f"),
            "n/a (simulated)" if s is None else f"{s.value:.2f}x ({s.lo:.2f}-{s.hi:.2f})",
            "" if st is None else f"{st.value:.2f}x",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)  # fmt: skip
