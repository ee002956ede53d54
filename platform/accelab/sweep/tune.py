"""The Ray Tune side of a sweep: how many trials, what each trial reserves, and the
``Tuner`` that runs ``sweep.trial.sweep_trial`` over the search space (or restores an
interrupted one). ``accelab sweep`` (``commands.sweep``) drives it."""

from __future__ import annotations

import math
import os

from ray import tune

from accelab.config.schema import ExperimentConfig
from accelab.errors import UsageError
from accelab.sweep.progress import SweepProgress
from accelab.sweep.space import param_space, scheduler, search_alg
from accelab.sweep.summary import MetricInfo
from accelab.sweep.trial import sweep_trial, trial_config
from accelab.tracking.runs import storage_path
from accelab.training.resources import check_placement


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


def check_resources(
    cfg: ExperimentConfig, nodes: list[dict[str, float]], where: str, potential=None, echo=print
) -> None:
    if max_finetune_epochs(cfg) > 0 and (
        note := check_placement(cfg, nodes, where, None, potential)
    ):
        echo(note)
    threads = cfg.measure.threads
    if not any(n.get("CPU", 0) >= threads for n in nodes + (potential or [])):
        raise UsageError(
            f"{cfg.labelled('measure.threads')}: {threads} threads per trial exceed every node of {where}"
        )


def trial_resources(base: dict, threads: int):
    """Post-training trials hold ``threads`` CPUs while measuring (and a whole GPU when
    ``measure.device`` is cuda: one measurement per GPU at a time); fine-tuning trials
    hold none themselves, their TorchTrainer workers reserve the CPUs and GPUs."""

    def resources(config: dict) -> tune.PlacementGroupFactory:
        cfg = trial_config(base, config)
        if cfg.finetune.epochs > 0:
            return tune.PlacementGroupFactory([{"CPU": 0, "memory": 1}])
        gpu = {"GPU": 1} if cfg.measure.device == "cuda" else {}
        return tune.PlacementGroupFactory([{"CPU": threads, **gpu}])

    return resources


def build_tuner(
    cfg: ExperimentConfig, ctx, restore_path: str | None, echo, metric: MetricInfo, noise: float
):
    # Tune's own Ctrl-C handler ends the run quietly and returns a partial ResultGrid that
    # would be summarized and registered as if complete; accelab's handler raises instead
    # (errors.catch_signals), the sweep's runs end KILLED and --resume restores this run.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # with verbose=0: no Tune banner; SweepProgress prints
    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial, ctx=ctx),
        trial_resources(ctx.base_config, cfg.measure.threads),
    )
    if restore_path and tune.Tuner.can_restore(restore_path):
        return tune.Tuner.restore(
            restore_path, trainable, resume_unfinished=True, resume_errored=True
        )
    if restore_path:  # stopped before Tune's first experiment-state save
        echo(f"Ray Tune saved no state in {restore_path} before the sweep was stopped: its "
             "trials start again, in the same MLflow parent run")  # fmt: skip
    progress = SweepProgress(
        total_trials(cfg), metric.name, cfg.sweep.constraints.quality_drop, noise, echo
    )
    higher = metric.higher_is_better
    return tune.Tuner(
        trainable,
        param_space=param_space(cfg.sweep),
        tune_config=tune.TuneConfig(
            search_alg=search_alg(cfg.sweep, cfg.train.seed, higher),
            scheduler=scheduler(cfg.sweep, max_finetune_epochs(cfg), higher),
            num_samples=cfg.sweep.num_samples,
            max_concurrent_trials=cfg.sweep.max_concurrent_trials,
            # A trial's process (torch, accelab and MLflow imported) serves the next trial
            # with the same resources instead of a fresh one: seconds per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=ctx.sweep_name,  # on --resume before Tune saved anything: same name, fresh start
            storage_path=storage_path(cfg),
            callbacks=[progress],
            verbose=0,
        ),
    )
