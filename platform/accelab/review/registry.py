"""The sweep's recommendation in the MLflow Model Registry.

Each sweep registers its recommended model as a new version of ``registry.model_name``
(default: the experiment name) with tags saying what it is and how sure the numbers are.
The alias (default ``fastest-within-<N>pt``) moves to the new version only when it is
measurably faster than the version holding it (beyond the noise floor) on the same
deployment target; otherwise it stays, and the new version says why.

What is registered is what was measured: a trial logs the ONNX model an ONNX Runtime target
ran (``model``) and the torch.export program a torch target ran (``torch_model``, where
torch can export it), each tagged with its backend and targets. The recommendation
registered is the first ONNX Runtime target's, else the primary target's
(``served_summary``), and the version is the trial's MLflow Model whose backend is the one
its numbers were measured on; without one, nothing is registered and the sweep says why. A
rerun whose recommendation is the same model (same run and backend, or same file) creates
no new version.
"""

from __future__ import annotations

from collections.abc import Callable

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.measure.quality import format_drop
from accelab.sweep.summary import SweepSummary
from accelab.tasks import resolve_task
from accelab.tracking import names
from accelab.variant.record import MODEL_SHA_TAG

SPEEDUP_TAG = names.SPEEDUP_VALUE
TARGET_TAG = names.TARGET


def alias_of(cfg: ExperimentConfig) -> str:
    drop = cfg.sweep.constraints.quality_drop * 100
    unit = "pct" if resolve_task(cfg.trainable.name).metric.transform == "exp" else "pt"
    # MLflow aliases allow letters, digits, '_' and '-': 0.5 points is "0_5pt"
    return cfg.registry.alias or f"fastest-within-{drop:g}{unit}".replace(".", "_")


def version_tags(s: SweepSummary, parent_id: str) -> dict[str, str]:
    r = s.recommended
    d = format_drop(r.q_drop, r.q_drop_lo, r.q_drop_hi, s.metric.relative_drop)
    unit = "percent" if s.metric.relative_drop else "points"
    return {
        names.SPEEDUP: f"{r.speedup:.2f}x ({r.speedup_lo:.2f}-{r.speedup_hi:.2f}, 95% CI)",
        SPEEDUP_TAG: f"{r.speedup:.6g}",
        names.QUALITY_DROP: f"{d} {unit} of test {s.metric.name} on {int(r.n_test or 0)} examples",
        names.BACKEND: r.backend,
        TARGET_TAG: s.target[0],
        names.TARGET_LABEL: s.target[1],
        names.NOISE_FLOOR: f"{s.noise:.3f}",
        names.SWEEP_RUN: parent_id,
        names.TRIAL_RUN: r.run_id,
    }


def logged_models(client: MlflowClient, run_id: str) -> list:
    """The MLflow Models the trial logged (ONNX ``model``, torch ``torch_model``)."""
    run = client.get_run(run_id)
    return client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )


SERVED_RUNTIME_PREFIX = "ort_"  # target keys of ONNX Runtime targets (ort_b64, ort_gen)


def served_summary(summaries: list[SweepSummary], target: str | None = None) -> SweepSummary:
    """The summary whose recommendation the registry serves: ``target``'s (the config's
    ``registry.target``, e.g. ov_b16 for the OpenVINO IR), else the first ONNX Runtime
    target's (its ONNX file runs anywhere ONNX Runtime does), else the primary target's
    (then its torch.export program, where torch could export what it ran)."""
    if target is not None:
        return next(s for s in summaries if s.target[0] == target)
    return next(
        (s for s in summaries if s.target[0].startswith(SERVED_RUNTIME_PREFIX)), summaries[0]
    )


def same_model(versions: list, model):
    """The first of ``versions`` (model versions) that serves the same model as ``model``
    (a logged model): the same run and backend, or the same file (ONNX bytes, torch
    tensors) from a rerun of the same recipe on the same weights."""
    digest, backend = model.tags.get(MODEL_SHA_TAG), model.tags.get(names.BACKEND)
    for v in versions:
        same_run = v.run_id == model.source_run_id and v.tags.get(names.BACKEND) == backend
        if same_run or (digest and v.tags.get(MODEL_SHA_TAG) == digest):
            return v
    return None


def measured_model(models: list, backend: str):
    """The trial's logged model that runs ``backend``, the one its numbers were measured
    on (an ONNX file for an ONNX Runtime backend, the torch.export program for torch)."""
    return next((m for m in models if m.tags.get(names.BACKEND) == backend), None)


def refusal(models: list, backend: str, target_label: str, why: str | None) -> str:
    """Why nothing is registered: no logged model runs the backend that was measured."""
    served = ", ".join(sorted({str(m.tags.get(names.BACKEND)) for m in models})) or "nothing"
    return (
        f"not registered: the recommendation for {target_label} was measured on {backend}, "
        f"but the trial's MLflow Models run {served}"
        + (f" ({why})" if why else "; add an onnxruntime target to register what is served")
    )


def register(
    client: MlflowClient, cfg: ExperimentConfig, s: SweepSummary, parent_id: str,
    echo: Callable[[str], None],
) -> tuple[str, str, bool] | None:  # fmt: skip
    """Register the recommendation; (name, version, alias moved), or None without one."""
    if s.recommended is None or not cfg.registry.enabled:
        return None
    name, alias, r = cfg.registry.model_name or cfg.mlflow_experiment, alias_of(cfg), s.recommended
    models = logged_models(client, r.run_id)
    model = measured_model(models, r.backend)
    if model is None:
        why = client.get_run(r.run_id).data.tags.get(names.TORCH_MODEL_ERROR)
        echo(refusal(models, r.backend, s.target[1], why))
        return None
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"accelab recommendations of {cfg.name}")
    if same := same_model(client.search_model_versions(f"name = '{name}'"), model):
        echo(f"{name} version {same.version} already serves this model ({r.backend}, same file)")
        return None
    task = resolve_task(cfg.trainable.name)
    version = client.create_model_version(
        name, model.artifact_location, run_id=r.run_id,
        tags={**version_tags(s, parent_id), MODEL_SHA_TAG: model.tags.get(MODEL_SHA_TAG, "")},
        model_id=model.model_id, description=f"Input: {task.input_description}",
    ).version  # fmt: skip
    move, why = decide(client, name, alias, r.speedup, s)
    if move:
        client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, names.ALIAS_DECISION, why)
    echo(f"registered {name} version {version}; alias {alias}: {why}")
    return name, version, move


def decide(
    client: MlflowClient, name: str, alias: str, speedup: float, s: SweepSummary
) -> tuple[bool, str]:
    """Whether the alias moves to the new version, and why (see ``alias_decision``)."""
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    return alias_decision(current, speedup, s.target[0], s.noise)


def alias_decision(current, speedup: float, target: str, noise: float) -> tuple[bool, str]:
    """Whether the alias moves from ``current`` (the model version holding it, or None) to a
    new version measured at ``speedup`` on ``target``, and why: only when it is faster
    beyond the noise floor on the same target, never silently to a worse or a tied one."""
    if current is None:
        return True, "set (no version held it)"
    old_target = current.tags.get(TARGET_TAG)
    if old_target != target:
        return False, (f"kept on version {current.version}: it was chosen for target {old_target}, "
                       f"this one for {target}")  # fmt: skip
    old = float(current.tags.get(SPEEDUP_TAG, "0") or 0)
    if speedup > old * (1 + noise):
        return True, f"moved from version {current.version} ({old:.2f}x) to {speedup:.2f}x"
    return False, (f"kept on version {current.version} ({old:.2f}x): {speedup:.2f}x is not faster "
                   f"beyond the {noise:.0%} noise floor")  # fmt: skip
