"""``accelab sweep``: baseline once, Tune over the compression knobs, then the frontier.

parent MLflow run (kind=sweep)
  baseline training run (child, kind=train)   unless sweep.baseline_from is given
  one child run per trial (kind=trial)
-> pareto.csv, pareto.png, recommendation, recommended_model/ on the parent
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.errors import UsageError
from accelab.sweep.summary import SweepSummary

BASELINE_DIR_TAG = "accelab.baseline_dir"


def total_trials(cfg: ExperimentConfig) -> int:
    grids = [len(d.grid) for d in cfg.sweep.space.values() if d.kind == "grid"]
    return cfg.sweep.num_samples * math.prod(grids) * max(1, len(cfg.sweep.variants))


def max_finetune_epochs(cfg: ExperimentConfig) -> int:
    """The most fine-tuning epochs any trial can ask for (base, space or variants)."""
    epochs = [cfg.finetune.epochs] + [int(v.get("finetune.epochs", 0)) for v in cfg.sweep.variants]
    d = cfg.sweep.space.get("finetune.epochs")
    if d is not None:
        values = getattr(d, d.kind)
        epochs += [int(v) for v in values] if d.kind in ("grid", "choice") else [int(values[1])]
    return max(epochs)


def may_finetune(cfg: ExperimentConfig) -> bool:
    return max_finetune_epochs(cfg) > 0


def check_resources(cfg: ExperimentConfig, nodes: list[dict[str, float]], where: str) -> None:
    from accelab.resources import check_placement

    if may_finetune(cfg):
        check_placement(cfg, nodes, where)
    threads = cfg.measure.threads
    if not any(n.get("CPU", 0) >= threads for n in nodes):
        raise UsageError(
            f"measure.threads: {threads} threads per trial exceed every node of {where}"
        )


def trial_resources(base: dict, threads: int):
    """Post-training trials hold ``threads`` CPUs while measuring; fine-tuning trials hold
    none themselves, their TorchTrainer workers reserve the CPUs."""
    from ray import tune

    from accelab.sweep.trial import SweepContext, trial_config

    ctx = SweepContext(base, "", "", "", "", 0.0)

    def resources(config: dict) -> tune.PlacementGroupFactory:
        if trial_config(ctx, config).finetune.epochs > 0:
            return tune.PlacementGroupFactory([{"CPU": 0, "memory": 1}])
        return tune.PlacementGroupFactory([{"CPU": threads}])

    return resources


def obtain_baseline(cfg: ExperimentConfig, tracking_uri: str, parent_id: str, echo) -> Path:
    """Dense weights: ``sweep.baseline_from``, the one a resumed sweep trained, or train now."""
    from accelab.compress_run import prepare_source
    from accelab.train import run_training

    client = MlflowClient(tracking_uri)
    if cfg.sweep.baseline_from:
        dense = prepare_source(cfg, cfg.sweep.baseline_from, tracking_uri)
    elif known := client.get_run(parent_id).data.tags.get(BASELINE_DIR_TAG):
        echo(f"baseline: reusing {known}")
        return Path(known)
    else:
        echo("baseline: training the dense fp32 model once for the whole sweep")
        dense_cfg = cfg.model_copy(update={"sweep": None})
        outcome = run_training(dense_cfg, echo=echo, parent_run_id=parent_id)
        dense = Path(outcome.checkpoint_path)
    client.set_tag(parent_id, BASELINE_DIR_TAG, str(dense))
    return dense


def measure_baseline(
    cfg: ExperimentConfig, dense: Path, tracking_uri: str, parent_id: str
) -> float:

    from accelab.checkpoint import MODEL_FILE, load_model_state
    from accelab.compress.pipeline import DENSE_BACKEND
    from accelab.registry import resolve_task
    from accelab.tracking import log_metrics_once
    from accelab.variant import MB, measure_model

    task = resolve_task(cfg.trainable.name)
    model = task.build_model(cfg.trainable.model, **cfg.trainable.model_args)
    model.load_state_dict(load_model_state(dense / MODEL_FILE))
    m = measure_model(
        model.eval(), cfg, task.load_splits(cfg.trainable.data_seed).test, DENSE_BACKEND, False
    )
    log_metrics_once(
        MlflowClient(tracking_uri), parent_id, 0,
        {"baseline_accuracy": m.accuracy, "baseline_latency_p50_ms": m.latency_p50_ms,
         "baseline_latency_p95_ms": m.latency_p95_ms, "baseline_size_mb": m.size_bytes / MB},
    )  # fmt: skip
    return m.accuracy


def build_tuner(cfg: ExperimentConfig, ctx, restore_path: str | None, echo, baseline_acc: float):
    from ray import tune

    from accelab.sweep.progress import SweepProgress
    from accelab.sweep.space import param_space, scheduler, search_alg
    from accelab.sweep.trial import sweep_trial
    from accelab.train import storage_path

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # with verbose=0: no Tune banner; SweepProgress prints
    threads = cfg.measure.threads
    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial, ctx=ctx), trial_resources(ctx.base_config, threads)
    )
    if restore_path and tune.Tuner.can_restore(restore_path):
        return tune.Tuner.restore(
            restore_path, trainable, resume_unfinished=True, resume_errored=True
        )
    progress = SweepProgress(
        total_trials(cfg), baseline_acc, cfg.sweep.constraints.max_accuracy_drop, echo
    )
    max_epochs = max_finetune_epochs(cfg)
    return tune.Tuner(
        trainable,
        param_space=param_space(cfg.sweep),
        tune_config=tune.TuneConfig(
            search_alg=search_alg(cfg.sweep, cfg.train.seed),
            scheduler=scheduler(cfg.sweep, max_epochs),
            num_samples=cfg.sweep.num_samples,
            max_concurrent_trials=cfg.sweep.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=ctx.sweep_name,  # on --resume before Tune saved anything: same name, fresh start
            storage_path=storage_path(cfg),
            callbacks=[progress],
            verbose=0,
        ),
    )


def run_sweep(
    cfg: ExperimentConfig, *, resume: bool = False, echo: Callable[[str], None] = print
) -> SweepSummary:
    from accelab import resources
    from accelab.ray_session import init_ray, will_start_local_ray
    from accelab.sweep.trial import SweepContext
    from accelab.tracking import resolve_tracking_uri
    from accelab.train import find_resumable, start_mlflow_run, storage_path

    if cfg.sweep is None:
        raise UsageError("sweep: this config has no sweep section (see configs/digits_sweep.yaml)")
    # Trials run in Tune's per-trial working directories: hand them absolute paths.
    cfg = cfg.model_copy(
        update={"run": cfg.run.model_copy(update={"storage_path": storage_path(cfg)})}
    )
    tracking_uri = resolve_tracking_uri(cfg.tracking.uri)
    if will_start_local_ray():
        check_resources(cfg, resources.local_nodes(), "this machine")
    if cfg.sweep.baseline_from:
        from accelab.compress_run import prepare_source

        prepare_source(cfg, cfg.sweep.baseline_from, tracking_uri)
    restore_path = None
    if resume:
        parent_id, sweep_name = find_resumable(tracking_uri, cfg, None, kind="sweep")
        restore_path = f"{storage_path(cfg).rstrip('/')}/{sweep_name}"  # also s3://, gs://
        echo(f"resuming sweep {sweep_name} (MLflow parent run {parent_id})")
    init_ray()
    check_resources(cfg, resources.cluster_nodes(), "the Ray cluster")
    if not resume:
        sweep_name = f"{cfg.run_name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}"
        parent_id = start_mlflow_run(cfg, tracking_uri, sweep_name, "sweep")
    client = MlflowClient(tracking_uri)
    echo(
        f"sweep {sweep_name}: {total_trials(cfg)} trial(s), search={cfg.sweep.search} -> MLflow parent run {parent_id}"
    )
    dense = obtain_baseline(cfg, tracking_uri, parent_id, echo)
    baseline_acc = measure_baseline(cfg, dense, tracking_uri, parent_id)
    ctx = SweepContext(
        cfg.model_dump(mode="json"), str(dense), tracking_uri, parent_id, sweep_name, baseline_acc
    )
    tuner = build_tuner(cfg, ctx, restore_path, echo, baseline_acc)
    try:
        grid = tuner.fit()
    except BaseException:
        client.set_terminated(parent_id, "KILLED")
        raise
    finished = sum(1 for r in grid if r.error is None) if grid else 0
    summary = finish(client, parent_id, echo)
    if len(grid) < total_trials(cfg) or finished < len(grid):
        echo(
            f"{len(grid) - finished} trial(s) errored or were interrupted; continue with: accelab sweep ... --resume"
        )
    client.set_terminated(parent_id, "FINISHED")
    return summary


def finish(client: MlflowClient, parent_id: str, echo) -> SweepSummary:
    """Frontier, recommendation and artifacts on the parent run; print the table."""
    from accelab.sweep.plot import plot_pareto
    from accelab.sweep.summary import format_table, summarize, write_csv
    from accelab.tracking import log_metrics_once

    parent = client.get_run(parent_id)
    s = summarize(client, parent)
    with tempfile.TemporaryDirectory() as tmp:
        write_csv(s, Path(tmp, "pareto.csv"))
        plot_pareto(s, Path(tmp, "pareto.png"))
        client.log_artifact(parent_id, str(Path(tmp, "pareto.csv")))
        client.log_artifact(parent_id, str(Path(tmp, "pareto.png")))
        if s.recommended:
            r = s.recommended
            local = client.download_artifacts(r["run_id"], "deployable_model", tmp)
            client.log_artifacts(parent_id, local, "recommended_model")
            client.set_tag(parent_id, "accelab.recommended_trial", r["trial_id"])
            client.set_tag(parent_id, "accelab.recommended_run_id", r["run_id"])
            # step = trials summarized: a resumed sweep's new summary is a new row, not skipped
            log_metrics_once(client, parent_id, len(s.rows), {
                "recommended_speedup": r["speedup"], "recommended_accuracy": r["accuracy"],
                "recommended_accuracy_drop": r["accuracy_drop"], "recommended_size_ratio": r["size_ratio"],
            })  # fmt: skip
    client.set_tag(parent_id, "accelab.recommendation", format_table(s).splitlines()[-1])
    client.set_tag(parent_id, "accelab.trials", str(len(s.rows)))
    echo(format_table(s))
    exp = parent.info.experiment_id
    echo(
        f"review in the MLflow UI: mlflow ui --backend-store-uri {client.tracking_uri} --host 127.0.0.1"
        f"  then open http://127.0.0.1:5000/#/experiments/{exp}/runs/{parent_id}"
    )
    return s
