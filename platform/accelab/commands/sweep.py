"""``accelab sweep``: baseline once, Tune over the compression knobs, then the frontier.

parent MLflow run (kind=sweep)
  baseline training run (child, kind=train)   unless sweep.baseline_from is given
  one child run per trial (kind=trial)
-> A/A control, pareto.csv, pareto.png, recommendation, recommended_model/ on the parent
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.errors import UsageError, collect
from accelab.sweep.summary import TARGETS_TAG, MetricInfo, SweepSummary
from accelab.sweep.tune import build_tuner, check_resources, total_trials
from accelab.variant.targets import targets_of


def run_sweep(
    cfg: ExperimentConfig, *, resume: bool = False, echo: Callable[[str], None] = print
) -> SweepSummary:
    from accelab.preflight import check_measure_device
    from accelab.review.finish import finish
    from accelab.sweep.baseline import aa_control, obtain_baseline
    from accelab.sweep.trial import SweepContext
    from accelab.tasks import resolve_task
    from accelab.tracking.client import client_env, tracking_store
    from accelab.tracking.runs import find_resumable, new_ray_name, start_mlflow_run, storage_path
    from accelab.tracking.store_check import check_shared_stores
    from accelab.training import resources
    from accelab.training.ray_session import init_ray, will_start_local_ray

    if cfg.sweep is None:
        raise UsageError("sweep: this config has no sweep section (see configs/digits_sweep.yaml)")
    # Trials run in Tune's per-trial working directories: hand them absolute paths.
    cfg = cfg.model_copy(
        update={"run": cfg.run.model_copy(update={"storage_path": storage_path(cfg)})}
    )
    from accelab.variant.sources import prepare_source

    task = resolve_task(cfg.trainable.name)
    metric = MetricInfo(
        task.metric.name, task.metric.higher_is_better, task.metric.transform == "exp"
    )
    tracking_uri, *_ = collect(
        lambda: tracking_store(cfg.tracking.uri, cfg.labelled("tracking.uri")),
        lambda: (
            check_resources(cfg, resources.local_nodes(), "this machine")
            if will_start_local_ray(cfg)
            else None
        ),
        lambda: check_measure_device(cfg),
    )
    if cfg.sweep.baseline_from:
        prepare_source(cfg, cfg.sweep.baseline_from, tracking_uri)
    restore_path = None
    if resume:
        parent_id, sweep_name = find_resumable(tracking_uri, cfg, None, kind="sweep")
        restore_path = f"{storage_path(cfg).rstrip('/')}/{sweep_name}"  # also s3://, gs://
        echo(f"resuming sweep {sweep_name} (MLflow parent run {parent_id})")
    init_ray(cfg)
    nodes = resources.cluster_nodes()
    collect(
        lambda: check_resources(
            cfg, nodes, "the Ray cluster", resources.autoscalable_nodes(cfg), echo
        ),
        lambda: check_shared_stores(cfg, tracking_uri, storage_path(cfg), len(nodes)),
    )
    if not resume:
        sweep_name = new_ray_name(cfg, "sweep")
        targets = json.dumps([[t.key, t.label] for t in targets_of(cfg)])
        tags = {**metric.to_tags(), TARGETS_TAG: targets}
        display = f"sweep-{time.strftime('%m%d-%H%M%S')}"  # MLflow's run lists cut long names
        parent_id = start_mlflow_run(
            cfg, tracking_uri, sweep_name, "sweep", tags=tags, display_name=display
        )
    client = MlflowClient(tracking_uri)
    echo(
        f"sweep {sweep_name}: {total_trials(cfg)} trial(s), search={cfg.sweep.search} -> MLflow parent run {parent_id}"
    )
    dense = obtain_baseline(cfg, tracking_uri, parent_id, echo)
    aa = aa_control(cfg, dense, tracking_uri, parent_id)
    echo(
        f"A/A control (dense vs itself, {cfg.measure.rounds} rounds): {aa['aa_speedup']:.2f}x "
        f"({aa['aa_speedup_lo']:.2f}-{aa['aa_speedup_hi']:.2f}): noise floor {aa['noise_floor']:.1%}"
    )
    ctx = SweepContext(
        cfg.model_dump(mode="json"), str(dense), tracking_uri, parent_id, sweep_name, metric.name,
        client_env(),
    )  # fmt: skip
    tuner = build_tuner(cfg, ctx, restore_path, echo, metric, aa["noise_floor"])
    try:
        grid = tuner.fit()
    except BaseException:
        client.set_terminated(parent_id, "KILLED")
        raise
    finished = sum(1 for r in grid if r.error is None) if grid else 0
    summary = finish(client, parent_id, echo, cfg)
    if len(grid) < total_trials(cfg) or finished < len(grid):
        echo(
            f"{len(grid) - finished} trial(s) errored or were interrupted; continue with: accelab sweep ... --resume"
        )
    client.set_terminated(parent_id, "FINISHED")
    from accelab.tracking.client import ui_hint

    echo(ui_hint(client, parent_id))
    return summary
