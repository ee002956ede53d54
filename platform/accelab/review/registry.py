"""The sweep's recommendation in the MLflow Model Registry.

Each sweep registers its recommended model as a new version of ``registry.model_name``
(default: the experiment name) with tags saying what it is and how sure the numbers are.
The alias (default ``fastest-within-<N>pt``) moves to the new version only when it is
measurably faster than the version holding it (beyond the noise floor) on the same
deployment target; otherwise it stays, and the new version says why.
"""

from __future__ import annotations

from collections.abc import Callable

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.sweep.summary import SweepSummary
from accelab.tasks import resolve_task

SPEEDUP_TAG = "accelab.speedup_value"
TARGET_TAG = "accelab.target"


def alias_of(cfg: ExperimentConfig) -> str:
    drop = cfg.sweep.constraints.quality_drop * 100
    unit = "pct" if resolve_task(cfg.trainable.name).metric.transform == "exp" else "pt"
    return cfg.registry.alias or f"fastest-within-{drop:g}{unit}"


def version_tags(s: SweepSummary, parent_id: str) -> dict[str, str]:
    r = s.recommended
    d = f"{r.q_drop * 100:+.2f} [{r.q_drop_lo * 100:+.2f}, {r.q_drop_hi * 100:+.2f}]"
    return {
        "accelab.speedup": f"{r.speedup:.2f}x ({r.speedup_lo:.2f}-{r.speedup_hi:.2f} over rounds)",
        SPEEDUP_TAG: f"{r.speedup:.6g}",
        "accelab.quality_drop": f"{d} points of test {s.metric.name} on {int(r.n_test or 0)} examples",
        "accelab.backend": r.backend,
        TARGET_TAG: s.target[0],
        "accelab.target_label": s.target[1],
        "accelab.noise_floor": f"{s.noise:.3f}",
        "accelab.sweep_run_id": parent_id,
        "accelab.trial_run_id": r.run_id,
    }


def logged_model(client: MlflowClient, run_id: str):
    """The MLflow Model ``model`` the trial logged."""
    run = client.get_run(run_id)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    if not models:
        raise MlflowException(f"run {run_id} logged no MLflow Model")
    return models[0]


def register(
    client: MlflowClient, cfg: ExperimentConfig, s: SweepSummary, parent_id: str,
    echo: Callable[[str], None],
) -> tuple[str, str, bool] | None:  # fmt: skip
    """Register the recommendation; (name, version, alias moved), or None without one."""
    if s.recommended is None or not cfg.registry.enabled:
        return None
    name, alias, r = cfg.registry.model_name or cfg.mlflow_experiment, alias_of(cfg), s.recommended
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"accelab recommendations of {cfg.name}")
    tags = version_tags(s, parent_id)
    model = logged_model(client, r.run_id)
    version = client.create_model_version(
        name, model.artifact_location, run_id=r.run_id, tags=tags, model_id=model.model_id
    ).version
    move, why = decide(client, name, alias, r.speedup, s)
    if move:
        client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, "accelab.alias_decision", why)
    echo(f"registered {name} version {version}; alias {alias}: {why}")
    return name, version, move


def decide(
    client: MlflowClient, name: str, alias: str, speedup: float, s: SweepSummary
) -> tuple[bool, str]:
    """Whether the alias moves to the new version, and why (never silently to a worse one)."""
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return True, "set (no version held it)"
    old_target = current.tags.get(TARGET_TAG)
    if old_target != s.target[0]:
        return False, (f"kept on version {current.version}: it was chosen for target {old_target}, "
                       f"this one for {s.target[0]}")  # fmt: skip
    old = float(current.tags.get(SPEEDUP_TAG, "0") or 0)
    if speedup > old * (1 + s.noise):
        return True, f"moved from version {current.version} ({old:.2f}x) to {speedup:.2f}x"
    return False, (f"kept on version {current.version} ({old:.2f}x): {speedup:.2f}x is not faster "
                   f"beyond the {s.noise:.0%} noise floor")  # fmt: skip
