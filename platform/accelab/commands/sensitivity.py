"""``accelab sensitivity``: per layer, how much validation quality the model loses when
only that layer is quantized or pruned; a table sorted by drop, logged to MLflow as one
run (a metric per layer and setting, the table as CSV, a bar plot).

It answers which layers a per-layer recipe (``compression.quant.layers``) should keep in
float before any sweep runs, and is what ``compression.quant.fallback: auto`` ranks by.
"""

from __future__ import annotations

import csv
import io
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from accelab.compress.errors import CompressionError
from accelab.compress.prune import prunable_layers
from accelab.compress.recipe import float_layers, unmatched
from accelab.compress.sensitivity import Row, Setting, layer_sensitivity
from accelab.config.schema import ExperimentConfig
from accelab.errors import UsageError, collect
from accelab.measure.quality import drop_unit, format_drop
from accelab.preflight import build_on_meta
from accelab.tracking.client import tracking_store
from accelab.tracking.runs import mark_failed, new_ray_name, start_mlflow_run
from accelab.training.checkpoint import MODEL_FILE, load_model_state
from accelab.variant.sensitivity import ValDrop
from accelab.variant.setup import Setup
from accelab.variant.sources import prepare_source

METRIC_PREFIX = "val_drop"  # metric val_drop.<setting>.<layer> (+ _lo, _hi)
CSV_FILE, PLOT_FILE = "sensitivity.csv", "sensitivity.png"


def settings_of(bits: Sequence[int], sparsity: Sequence[float]) -> list[Setting]:
    """The settings asked for (``--bits``, ``--sparsity``); default ``--bits 8``."""
    if not bits and not sparsity:
        bits = [8]
    problems, settings = [], []
    for kind, option, values in (("quant", "--bits", bits), ("prune", "--sparsity", sparsity)):
        for value in values:
            try:
                settings.append(Setting(kind, value))
            except CompressionError as exc:
                problems.append(f"{option} {value:g}: {exc}")
    if problems:
        raise UsageError(problems)
    return list(dict.fromkeys(settings))


def layers_of(names: list[str], asked: Sequence[str]) -> list[str]:
    """The layers to measure: ``--layers`` (names or fnmatch patterns), default all."""
    if missing := unmatched(names, dict.fromkeys(asked)):
        raise UsageError(f"--layers: no such layer {missing}; layers are {names}")
    if not asked:
        return names
    return float_layers(names, dict.fromkeys(asked))  # the names the patterns match


def run_sensitivity(
    cfg: ExperimentConfig,
    source: str,
    bits: Sequence[int] = (),
    sparsity: Sequence[float] = (),
    layers: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> tuple[str, list[Row]]:
    names = [name for name, _ in prunable_layers(build_on_meta(cfg))]
    tracking_uri = tracking_store(cfg.tracking.uri, cfg.labelled("tracking.uri"))
    setup = Setup.of(cfg)
    settings, dense_dir, chosen = collect(
        lambda: settings_of(bits, sparsity),
        lambda: prepare_source(setup, source, tracking_uri),
        lambda: layers_of(names, layers),
    )
    task = setup.task
    model = setup.new_model()
    model.load_state_dict(load_model_state(dense_dir / MODEL_FILE))
    name = new_ray_name(cfg, "sensitivity")
    run_id = start_mlflow_run(cfg, tracking_uri, name, "sensitivity", display_name=name)
    client = MlflowClient(tracking_uri)
    echo(f"sensitivity of {len(chosen)} layer(s) x {len(settings)} setting(s) of {dense_dir} "
         f"on the validation split -> MLflow run {run_id}")  # fmt: skip
    try:
        drop_of = ValDrop.of(model, task, setup.splits.val, cfg.measure.threads)
        rows = layer_sensitivity(model, settings, drop_of, chosen)
        relative = task.metric.transform == "exp"
        log_sensitivity(client, run_id, source, settings, rows, task.metric.name, relative)
    except BaseException as exc:
        mark_failed(tracking_uri, run_id, exc)
        raise
    client.set_terminated(run_id, "FINISHED")
    echo(format_table(rows, task.metric.name, relative))
    return run_id, rows


def metric_name(row: Row) -> str:
    return f"{METRIC_PREFIX}.{row.setting.label}.{row.layer}"


def format_table(rows: list[Row], metric: str, relative: bool = False) -> str:
    """One line per layer and setting, the most sensitive first."""
    unit = drop_unit(relative)
    table = [("layer", "setting", f"val {metric} drop [95% CI] ({unit})", "n")]
    for r in rows:
        d = r.drop
        table.append((r.layer, r.setting.label, format_drop(d.value, d.lo, d.hi, relative),
                      str(d.n)))  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    )


def to_csv(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["layer", "kind", "value", "setting", "drop", "drop_lo", "drop_hi", "n"])
    for r in rows:
        d = r.drop
        writer.writerow([r.layer, r.setting.kind, f"{r.setting.value:g}", r.setting.label,
                         d.value, d.lo, d.hi, d.n])  # fmt: skip
    return out.getvalue()


def plot(rows: list[Row], metric: str, relative: bool, path: Path) -> None:
    """Horizontal bars, one per layer and setting, the most sensitive on top, with their
    95% intervals."""
    import matplotlib  # lazy like sweep/plot.py: Agg must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = rows[::-1]
    values = [r.drop.value * 100 for r in ordered]
    errors = [[(r.drop.value - r.drop.lo) * 100 for r in ordered],
              [(r.drop.hi - r.drop.value) * 100 for r in ordered]]  # fmt: skip
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(rows) + 1)))
    ax.barh([f"{r.layer} {r.setting.label}" for r in ordered], values, xerr=errors, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"validation {metric} drop ({drop_unit(relative)}; bars: 95% CI)")
    ax.set_title("per-layer sensitivity: only this layer compressed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_sensitivity(
    client, run_id: str, source: str, settings: list[Setting], rows: list[Row], metric: str,
    relative: bool,
) -> None:  # fmt: skip
    params = {
        "source": source,
        "bits": " ".join(f"{s.value:g}" for s in settings if s.kind == "quant") or "-",
        "sparsity": " ".join(f"{s.value:g}" for s in settings if s.kind == "prune") or "-",
        "layers": str(len({r.layer for r in rows})),
        "metric": metric,
        "split": "val",
    }
    metrics, now = {}, int(time.time() * 1000)
    for r in rows:
        base = metric_name(r)
        metrics |= {base: r.drop.value, f"{base}_lo": r.drop.lo, f"{base}_hi": r.drop.hi}
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in params.items()],
    )
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, CSV_FILE).write_text(to_csv(rows))
        plot(rows, metric, relative, Path(tmp, PLOT_FILE))
        client.log_artifact(run_id, str(Path(tmp, CSV_FILE)))
        client.log_artifact(run_id, str(Path(tmp, PLOT_FILE)))
