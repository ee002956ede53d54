"""Pre-flight: load a config, then check it against the trainable and the engine, before
Ray or MLflow start (errors exit 2, naming the file or override and the dotted key).

``accelab.config`` validates the schema alone (it imports no engine code); the checks here
need more than one key, the trainable itself, or the engine (which layers a structured
pruning may cut, whether a GPU is there to measure on).

Every sweep point goes through the same checks as a single config: each grid value,
each choice, both ends of every range, and each hand-picked variant, combined, so that
``accelab validate`` and the sweep's pre-flight catch a trial that would fail (or do
nothing) before any baseline is trained.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from accelab.compress.heads import count_errors, head_counts
from accelab.compress.prune import prunable_layers, structured_targets
from accelab.compress.recipe import unmatched, value_of
from accelab.config import loader
from accelab.config.schema import ExperimentConfig, PruneConfig, QuantConfig
from accelab.errors import ConfigError, UsageError
from accelab.export import openvino
from accelab.tasks import UnknownTrainable, build_model, import_timeout_s, resolve_task

MAX_POINTS = 2000  # a bigger sweep is checked one dimension at a time


def build_on_meta(cfg: ExperimentConfig) -> nn.Module:
    """Build the configured model without allocating weights (shapes only)."""
    with torch.device("meta"):
        return build_model(cfg.trainable)


def model_errors(cfg: ExperimentConfig, cache: dict[str, Any] | None = None) -> list[str]:
    """Trainable resolves, its model builds, and every named layer exists and keeps a channel."""
    try:
        task = resolve_task(cfg.trainable.name)
    except UnknownTrainable as exc:
        return [f"trainable.name: {exc}"]
    if cfg.trainable.model not in task.models:
        return [f"trainable.model: {cfg.trainable.model!r} not in {sorted(task.models)}"]
    key = json.dumps(cfg.trainable.model_dump(), sort_keys=True, default=str)
    cache = {} if cache is None else cache
    if key not in cache:
        try:
            cache[key] = build_on_meta(cfg)
        except Exception as exc:
            cache[key] = (
                f"trainable.model_args: building {cfg.trainable.name}/{cfg.trainable.model} with "
                f"{cfg.trainable.model_args} raised {type(exc).__name__}: {exc}"
            )
    model = cache[key]
    if isinstance(model, str):
        return [model]
    problems = layer_errors(model, cfg, task.structured_only)
    if not task.generates and any(t.mode == "generate" for t in cfg.measure.targets):
        problems.append(
            f"measure.targets: mode generate needs a language model; {task.name} does not generate"
        )
    return problems


def layer_errors(model: nn.Module, cfg: ExperimentConfig, only: tuple[str, ...] = ()) -> list[str]:
    problems = []
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}
    prune = cfg.compression.prune
    if unknown := unmatched(sorted(layers), cfg.compression.quant.layers):
        problems.append(
            f"compression.quant.layers: no such layer {unknown}; layers are {sorted(layers)}"
        )
    missing = [n for n in prune.exclude if n not in layers]
    if missing:
        problems.append(
            f"compression.prune.exclude: no such layer {missing}; layers are {sorted(layers)}"
        )
    if prune.method == "structured" and layers:
        targets = structured_targets(model, prune.exclude, only)
        if not targets:
            problems.append(
                "compression.prune.method: structured, but no layer of this model may lose "
                "output channels (check compression.prune.exclude)"
            )
        for name, layer in targets:
            width = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            own = name if value_of(name, None, prune.layers) is not None else None
            ratio = value_of(name, prune.sparsity, prune.layers)
            if int(width * (1 - ratio)) < 1:
                key = "compression.prune.layers" if own else "compression.prune.sparsity"
                problems.append(
                    f"{key}: {ratio} would remove every channel of layer {name!r} ({width} channels)"
                )
    if prune.method == "heads":
        problems += head_errors(model, cfg)
    if layers:
        problems += prune_recipe_errors(model, prune, only)
    return problems


def prune_recipe_errors(model: nn.Module, prune: PruneConfig, only: tuple[str, ...]) -> list[str]:
    """Every key of ``compression.prune.layers`` matches a layer this method prunes (one
    that matches none, a typo or a layer kept dense, would silently do nothing)."""
    if not prune.layers or prune.method == "none":  # nothing to do (a sweep may cross them)
        return []
    if prune.method == "heads":
        return [
            "compression.prune.layers: per-layer sparsity applies to unstructured and structured "
            "pruning; head pruning removes compression.prune.sparsity of every attention layer"
        ]
    if prune.method == "structured":
        pruned = [name for name, _ in structured_targets(model, prune.exclude, only)]
        kept = "structured pruning removes output channels of"
    else:
        output = [] if prune.prune_output_layer else [prunable_layers(model)[-1][0]]
        pruned = [name for name, _ in prunable_layers(model, [*prune.exclude, *output])]
        kept = "unstructured pruning prunes (the output layer and prune.exclude stay dense)"
    if unknown := unmatched(pruned, prune.layers):
        return [f"compression.prune.layers: {unknown} match no layer that {kept} {pruned}"]
    return []


def head_errors(model: nn.Module, cfg: ExperimentConfig) -> list[str]:
    """Head pruning needs attention layers, and its fraction must remove some but not all
    heads of each (a sweep's low end that rounds to no head would measure the dense model)."""
    counts = head_counts(model)
    if not counts:
        return [
            f"compression.prune.method: heads, but {cfg.trainable.name}/{cfg.trainable.model} "
            "has no attention layers (q/k/v/o, GPT-2 c_attn/c_proj or BERT query/key/value)"
        ]
    return [f"compression.prune.sparsity: {p}" for p in count_errors(counts, cfg.compression.prune.sparsity)]  # fmt: skip


def training_errors(cfg: ExperimentConfig) -> list[str]:
    problems = []
    prune, quant = cfg.compression.prune, cfg.compression.quant
    if quant.mode == "qat" and (quant.bits > 8 or cfg.finetune.epochs == 0):
        problems.append("compression.quant.mode: qat needs quant.bits <= 8 and finetune.epochs > 0")
    if prune.schedule == "cubic" and (prune.method != "unstructured" or cfg.finetune.epochs == 0):
        problems.append(
            "compression.prune.schedule: cubic needs prune.method=unstructured and finetune.epochs > 0"
        )
    problems += recipe_errors(quant)
    if cfg.finetune.distill.weight > 0 and cfg.finetune.epochs == 0:
        problems.append("finetune.distill.weight: distillation needs finetune.epochs > 0")
    if prune.method != "none" and prune.sparsity == 0 and not any(prune.layers.values()):
        problems.append(
            "compression.prune.sparsity: must be > 0 when prune.method is set (or give some "
            "layer a sparsity > 0 in compression.prune.layers)"
        )
    fail = cfg.faults.fail_at_epoch
    if fail is not None and fail >= cfg.train.epochs:
        problems.append(f"faults.fail_at_epoch: {fail} >= train.epochs ({cfg.train.epochs})")
    if cfg.faults.fail_rank >= cfg.scaling.num_workers:
        problems.append(f"faults.fail_rank: {cfg.faults.fail_rank} >= scaling.num_workers")
    return problems


def recipe_errors(quant: QuantConfig) -> list[str]:
    """A bit-width other than ``bits`` has no real kernel (it would silently run at
    ``bits``). Both keys do nothing at bits 16/32 (so that a sweep can cross them with
    ``bits``)."""
    problems = []
    other = sorted(k for k, b in quant.layers.items() if b is not None and b != quant.bits)
    if other and quant.real_kernel and quant.bits <= 8:
        problems.append(
            f"compression.quant.layers: {other} ask for bits other than compression.quant.bits "
            f"({quant.bits}), which only simulation runs: set compression.quant.real_kernel: false "
            "or keep those layers in float"
        )
    return problems


def measure_errors(cfg: ExperimentConfig, in_sweep: bool = False) -> list[str]:
    """``in_sweep``: ``cfg`` is a sweep's base config or one of its points."""
    m = cfg.measure
    keys = [(t.runtime, "generation" if t.mode == "generate" else t.batch_size or m.batch_size)
            for t in m.targets]  # fmt: skip
    problems = [
        f"measure.targets: {runtime} at batch {batch} is listed twice"
        for runtime, batch in sorted({k for k in keys if keys.count(k) > 1})
    ]
    if m.device == "cuda" and any(t.runtime == "onnxruntime" for t in m.targets):
        problems.append(
            "measure.targets: onnxruntime targets are measured on the CPU; with measure.device="
            "cuda list torch targets only"
        )
    if m.device == "cuda" and any(t.runtime == "openvino" for t in m.targets):
        problems.append(
            "measure.targets: openvino targets are measured on the CPU; with measure.device="
            "cuda list torch targets only"
        )
    if any(t.runtime == "openvino" for t in m.targets) and not openvino.available():
        problems.append(openvino.MISSING)
    if m.device == "cuda" and in_sweep and cfg.finetune.epochs > 0:
        problems.append(
            f"finetune.epochs: {cfg.finetune.epochs}, but a sweep measured on cuda cannot "
            "fine-tune yet: a fine-tuning trial holds no GPU itself (its TorchTrainer's "
            "workers do), so it has none to measure on; set finetune.epochs=0 for these "
            "trials or measure.device=cpu"
        )
    return problems


def point_values(dist) -> list[Any]:
    """The values of one search dimension worth checking: all listed, or both range ends."""
    if dist.kind in ("grid", "choice"):
        return list(getattr(dist, dist.kind))
    low, high = getattr(dist, dist.kind)
    return [low, high - 1 if dist.kind == "randint" else high]


def sweep_points(cfg: ExperimentConfig) -> list[list[tuple[str, str, dict[str, Any]]]]:
    """Every point to check, each a list of (key, description, assignment) per dimension:
    the full product of the dimensions, or, when that is too large, one dimension varied at
    a time around the first point. ``key`` names where an assignment comes from
    (``sweep.space.<key>`` or ``sweep.variants[i]``)."""
    sweep = cfg.sweep
    dims = [
        [(f"sweep.space.{k}", f"{k}={v!r}", {k: v}) for v in point_values(d)]
        for k, d in sweep.space.items()
    ]
    if sweep.variants:
        dims.append([(f"sweep.variants[{i}]", "", dict(v)) for i, v in enumerate(sweep.variants)])
    dims = [d for d in dims if d]
    size = 1
    for d in dims:
        size *= len(d)
    if size <= MAX_POINTS:
        return [list(combo) for combo in itertools.product(*dims)]
    first = [d[0] for d in dims]
    return [[*first[:i], p, *first[i + 1 :]] for i, d in enumerate(dims) for p in d]


def culprit(combo: list[tuple[str, str, dict[str, Any]]], why: str) -> tuple[str, str]:
    """(key, description) of the point for a problem: the dimension that sets the key the
    problem is about, else the variant, else the first dimension; the rest is context."""
    key = why.split(":", 1)[0]
    blamed = next((c for c in combo if any(k == key for k in c[2])), None)
    blamed = blamed or next((c for c in combo if c[0].startswith("sweep.variants")), combo[0])
    where = ", ".join(text for k, text, _ in combo if text and k != blamed[0])
    own = blamed[1]
    return blamed[0], ", ".join(t for t in (own, where) if t)


def point_errors(base: dict[str, Any], values: dict[str, Any], cache: dict) -> list[str]:
    """Why the config with ``values`` set is invalid (schema, then cross-field)."""
    data = copy.deepcopy(base)
    try:
        for key, value in values.items():
            loader.set_dotted(data, key.split("."), value)
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        return [f"{key}: {msg}" for key, msg in loader.validation_problems(exc)]
    except ConfigError as exc:
        return list(exc.messages)
    return training_errors(cfg) + measure_errors(cfg, True) + model_errors(cfg, cache)


def sweep_errors(cfg: ExperimentConfig, known: tuple[str, ...] = ()) -> list[str]:
    """Every searched key exists and every point of the sweep is a valid config. Problems
    in ``known`` (already reported for the base config) are not repeated per point."""
    if cfg.sweep is None:
        return []
    problems = []
    sweep = cfg.sweep
    if not sweep.space and not sweep.variants:
        problems.append("sweep.space: empty (and no sweep.variants); nothing to search")
    if sweep.search == "optuna":
        grids = [f"sweep.space.{k}" for k, d in sweep.space.items() if d.kind == "grid"]
        grids += ["sweep.variants"] if sweep.variants else []
        problems += [f"{g}: grids are not supported by search=optuna; use choice" for g in grids]
        problems += [
            f"sweep.space.{k}.choice: search=optuna samples numbers, strings, booleans and null; "
            "a choice of mappings or lists (e.g. compression.prune.layers) needs search grid or random"
            for k, d in sweep.space.items()
            if d.kind == "choice" and any(isinstance(v, dict | list) for v in d.choice)
        ]
    for key, dist in sweep.space.items():
        if dist.kind in ("grid", "choice") and not getattr(dist, dist.kind):
            problems.append(f"sweep.space.{key}.{dist.kind}: empty list")
        elif dist.kind not in ("grid", "choice"):
            low, high = getattr(dist, dist.kind)
            if not low < high:
                problems.append(
                    f"sweep.space.{key}.{dist.kind}: low must be < high, got [{low}, {high}]"
                )
    for i, variant in enumerate(sweep.variants):
        overlap = sorted(set(variant) & set(sweep.space))
        if overlap:
            problems.append(
                f"sweep.variants[{i}]: {overlap} also in sweep.space; set each key in one place"
            )
    if problems:
        return problems
    base = cfg.model_dump(exclude={"sweep"})
    cache: dict[str, Any] = {}
    seen: set[str] = set(known)
    for combo in sweep_points(cfg):
        values: dict[str, Any] = {}
        for _, _, assignment in combo:
            values.update(assignment)
        for why in point_errors(base, values, cache):
            if why not in seen:  # one line per distinct problem, naming the first point with it
                seen.add(why)
                key, where = culprit(combo, why)
                problems.append(f"{key}: {'at ' + where + ': ' if where else ''}{why}")
    return problems


def run_name_errors(cfg: ExperimentConfig) -> list[str]:
    """The run name becomes a directory under ``run.storage_path`` (and Ray's temp dir):
    a plain name, so that nothing is written outside them."""
    key = "run.name" if cfg.run.name else "name"
    name = cfg.run_name
    if name in (".", "..") or any(c in name for c in ("/", "\\", "\0")):
        return [f"{key}: {name!r} must be a plain name (no '/', '\\', and not '.' or '..'): "
                f"it names the run's directory under run.storage_path"]  # fmt: skip
    return []


def registry_errors(cfg: ExperimentConfig) -> list[str]:
    """The registered model's name and alias as MLflow's registry will judge them (its own
    validators), now rather than after the whole sweep has run; ``registry.target`` one of
    the measured targets."""
    if cfg.sweep is None or not cfg.registry.enabled:
        return []
    keys = cfg.measure.target_keys()
    if cfg.registry.target is not None and cfg.registry.target not in keys:
        return [f"registry.target: {cfg.registry.target!r} is not a measured target; "
                f"measure.targets are {', '.join(keys)}"]  # fmt: skip
    # lazy: ``accelab validate`` imports no MLflow otherwise (measured on a busy 2-core machine:
    # ~2-3 s of its start-up); only a sweep that registers its model needs MLflow's validators
    from mlflow.exceptions import MlflowException
    from mlflow.utils import validation

    name_key = "registry.model_name"
    if cfg.registry.model_name is None:  # the default: the experiment's name
        name_key = "tracking.experiment" if cfg.tracking.experiment else "name"
    checks = [(name_key, cfg.registry.model_name or cfg.mlflow_experiment,
               [validation._validate_model_name])]  # fmt: skip
    if cfg.registry.alias is not None:
        checks.append(("registry.alias", cfg.registry.alias,
                       [validation._validate_model_alias_name,
                        validation._validate_model_alias_name_reserved]))  # fmt: skip
    problems = []
    for key, value, validators in checks:
        for validate in validators:
            try:
                validate(value)
            except MlflowException as exc:
                hint = "" if key.startswith("registry.") else (
                    " (the registered model is named after it; or set registry.model_name)")  # fmt: skip
                problems.append(f"{key}: {exc.message}{hint}")
                break
    return problems


def semantic_errors(cfg: ExperimentConfig) -> list[str]:
    problems = training_errors(cfg) + measure_errors(cfg, cfg.sweep is not None) + model_errors(cfg)
    problems += run_name_errors(cfg) + registry_errors(cfg)
    return problems + sweep_errors(cfg, tuple(problems))


def load_config(path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load, override and validate one experiment file, with every cross-field check
    (and the environment's knobs, whichever trainable the file names)."""
    import_timeout_s()
    return loader.load_config(path, overrides, checks=semantic_errors)


def check_measure_device(cfg: ExperimentConfig) -> None:
    """``measure.device: cuda`` needs a GPU here, where the measuring process runs."""
    if cfg.measure.device == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"{cfg.labelled('measure.device')}: cuda, but torch sees no CUDA device on this "
            f"machine (torch {torch.__version__}); measure on cpu, or run where a GPU is"
        )


def check_storage_path(cfg: ExperimentConfig) -> None:
    """``run.storage_path`` is a directory this process can write, or can be created under
    a writable parent (URIs such as s3:// are the cluster's to check). Nothing is created."""
    path = cfg.run.storage_path
    if "://" in path:
        return
    target = Path(path).expanduser().absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        what = "is" if existing == target else f"is under {existing}, which is"
        raise UsageError(f"{cfg.labelled('run.storage_path')}: {target} {what} not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == target else f" (it would be created in {existing})"
        raise UsageError(
            f"{cfg.labelled('run.storage_path')}: {target} is not writable by this user{where}"
        )
