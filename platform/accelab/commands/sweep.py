"""``accelab sweep``: baseline once, Tune over the compression knobs, then the frontier.

parent MLflow run (kind=sweep)
  baseline training run (child, kind=train)   unless sweep.baseline_from is given
  one child run per trial (kind=trial)
-> A/A control, pareto.csv, pareto.png, the recommendation (its model stays in its trial run) on the parent
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.errors import UsageError, collect, interruption
from accelab.measure.latency import timing
from accelab.preflight import check_measure_device, check_storage_path
from accelab.review.finish import finish
from accelab.sweep.baseline import aa_control, obtain_baseline
from accelab.sweep.summary import TARGETS_TAG, MetricInfo, SweepSummary, child_runs
from accelab.sweep.trial import TRIAL_TAG, SweepContext
from accelab.sweep.tune import build_tuner, check_resources, total_trials
from accelab.tracking import names
from accelab.tracking.client import client_env, tracking_store, ui_hint
from accelab.tracking.runs import (
    end_unfinished,
    find_resumable,
    new_ray_name,
    reopen,
    start_mlflow_run,
    storage_path,
)
from accelab.tracking.store_check import check_shared_stores
from accelab.training import resources
from accelab.training.ray_session import init_ray, stop_ray, will_start_local_ray
from accelab.variant.setup import Setup
from accelab.variant.sources import prepare_source
from accelab.variant.targets import targets_of


def run_sweep(
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    retrain: bool = False,
    echo: Callable[[str], None] = print,
) -> SweepSummary:
    if cfg.sweep is None:
        raise UsageError("sweep: this config has no sweep section (see configs/digits_sweep.yaml)")
    # Trials run in Tune's per-trial working directories: hand them absolute paths.
    cfg = cfg.model_copy(
        update={"run": cfg.run.model_copy(update={"storage_path": storage_path(cfg)})}
    )
    setup = Setup.of(cfg)  # the trainable resolved once; its splits loaded once, when needed
    task = setup.task
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
        lambda: check_storage_path(cfg),
    )
    if cfg.sweep.baseline_from:
        prepare_source(setup, cfg.sweep.baseline_from, tracking_uri)
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
    if resume:  # the same parent run continues
        reopen(tracking_uri, parent_id)
    echo(
        f"sweep {sweep_name}: {total_trials(cfg)} trial(s), search={cfg.sweep.search} -> MLflow parent run {parent_id}"
    )
    try:
        summary = tune_and_finish(setup, client, tracking_uri, parent_id, sweep_name, restore_path,
                                  metric, echo, retrain)  # fmt: skip
    except BaseException as exc:
        ended(client, tracking_uri, parent_id, exc, total_trials(cfg))
        raise
    client.set_terminated(parent_id, "FINISHED")
    echo(ui_hint(client, parent_id))
    return summary


def tune_and_finish(
    setup: Setup, client: MlflowClient, tracking_uri: str, parent_id: str,
    sweep_name: str, restore_path: str | None, metric: MetricInfo, echo: Callable[[str], None],
    retrain: bool = False,
) -> SweepSummary:  # fmt: skip
    """Baseline, A/A control, the Tune run, then (only when every trial ran and nothing
    interrupted it) the frontier, recommendation and registration."""
    cfg = setup.cfg
    dense = obtain_baseline(setup, tracking_uri, parent_id, echo, retrain)
    aa = aa_control(setup, dense, tracking_uri, parent_id)
    echo(
        f"A/A control (dense vs itself, {timing(cfg.measure)}): {aa[names.M_AA_SPEEDUP]:.2f}x "
        f"({aa[names.lo(names.M_AA_SPEEDUP)]:.2f}-{aa[names.hi(names.M_AA_SPEEDUP)]:.2f}): "
        f"noise floor {aa[names.M_NOISE_FLOOR]:.1%}"
    )
    ctx = SweepContext(
        cfg.model_dump(mode="json"), str(dense), tracking_uri, parent_id, sweep_name, metric.name,
        client_env(),
    )  # fmt: skip
    tuner = build_tuner(cfg, ctx, restore_path, echo, metric, aa[names.M_NOISE_FLOOR])
    grid = tuner.fit()
    if interruption():  # the signal reached the trials too and Tune returned what it had
        raise KeyboardInterrupt
    finished = sum(1 for r in grid if r.error is None) if grid else 0
    summary = finish(client, parent_id, echo, cfg)
    if len(grid) < total_trials(cfg) or finished < len(grid):
        echo(
            f"{len(grid) - finished} trial(s) errored or were interrupted; continue with: accelab sweep ... --resume"
        )
    return summary


def ended(
    client: MlflowClient, tracking_uri: str, parent_id: str, exc: BaseException, total: int
) -> None:
    """Record how a started sweep ended early: Ray stopped first (no trial writes after
    this), then the parent and every run still RUNNING under it KILLED (interrupted) or
    the parent FAILED with the error. An interruption is re-raised saying what was kept."""
    stop = interruption(exc)
    stop_ray()
    done: list[str] = []
    with contextlib.suppress(Exception):  # never hide the sweep's error behind MLflow's
        end_unfinished(tracking_uri, parent_id, stop or exc)
        trials = child_runs(client, client.get_run(parent_id))
        done = sorted(
            r.data.tags.get(TRIAL_TAG, "?") for r in trials if r.info.status == "FINISHED"
        )
    if stop is None:
        return
    listed = f" ({', '.join(done)})" if done else ""
    raise stop.keeping(
        f"{len(done)} of {total} trial(s) finished{listed}, kept in MLflow run {parent_id}; "
        "nothing was registered"
    ) from None
