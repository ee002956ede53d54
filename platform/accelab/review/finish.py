"""The end of a sweep: frontier, recommendation and artifacts on the parent run.

The recommended model is not copied to the parent: its tags name the recommended trial
and run (``accelab export --run <sweep run>`` resolves to that trial's deployable)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from mlflow.tracking import MlflowClient

from accelab.review.note import sweep_note
from accelab.review.registry import alias_of, register, served_summary
from accelab.sweep.plot import plot_pareto
from accelab.sweep.summary import SweepSummary, summarize, targets_of
from accelab.sweep.table import format_table, recommendation_line, target_lines, write_csv
from accelab.tracking import names
from accelab.tracking.client import log_metrics_once
from accelab.tracking.ui import NOTE_TAG


def finish(
    client: MlflowClient, parent_id: str, echo: Callable[[str], None], cfg=None
) -> SweepSummary:
    """Summarize the trials, log pareto.csv/png, point at the recommended trial, register
    its model, write the run's description, print the table."""
    parent = client.get_run(parent_id)
    s = summarize(client, parent)
    others = [summarize(client, parent, key) for key, _ in targets_of(parent)[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        write_csv(s, Path(tmp, "pareto.csv"))
        plot_pareto(s, Path(tmp, "pareto.png"), parent.info.run_name)
        client.log_artifact(parent_id, str(Path(tmp, "pareto.csv")))
        client.log_artifact(parent_id, str(Path(tmp, "pareto.png")))
        if s.recommended:
            r = s.recommended
            client.set_tag(parent_id, names.RECOMMENDED_TRIAL, r.trial_id)
            client.set_tag(parent_id, names.RECOMMENDED_RUN, r.run_id)
            # step = trials summarized: a resumed sweep's new summary is a new row, not skipped
            # the recommendation's numbers under the trial columns' names too: the sweep's row
            # in the MLflow runs table shows what it recommends
            m = s.metric.name
            log_metrics_once(client, parent_id, len(s.rows), {
                "recommended_speedup": r.speedup, "recommended_quality": r.q,
                "recommended_drop": r.q_drop, "recommended_size_ratio": r.size_ratio,
                names.M_SPEEDUP: r.speedup, m: r.q, names.drop(m): r.q_drop,
                names.drop(names.on_val(m)): r.val_q_drop,
                names.M_LATENCY_P50_MS: r.latency_p50_ms, names.M_SIZE_RATIO: r.size_ratio,
            })  # fmt: skip
    client.set_tag(parent_id, names.RECOMMENDATION, recommendation_line(s))
    for other in others:
        client.set_tag(
            parent_id,
            names.for_target(names.RECOMMENDATION, other.target[0]),
            recommendation_line(other),
        )
    client.set_tag(parent_id, names.TRIALS, str(len(s.rows)))
    echo("\n".join([format_table(s), *target_lines(others)]))
    registered = ""
    served = served_summary([s, *others], cfg.registry.target if cfg is not None else None)
    if cfg is not None and (reg := register(client, cfg, served, parent_id, echo)):
        name, version, moved = reg
        registered = f"Registered as **{name}** version {version}" + (
            f" (alias `{alias_of(cfg)}`)" if moved else f" (alias `{alias_of(cfg)}` unchanged)"
        )
        client.set_tag(parent_id, names.REGISTERED_MODEL, f"{name}/{version}")
    client.set_tag(parent_id, NOTE_TAG, sweep_note(s, others, parent_id, registered))
    return s
