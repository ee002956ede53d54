"""Cross-field checks that need more than one key, or the trainable itself."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from accelab.config.schema import ExperimentConfig
from accelab.registry import UnknownTrainable, resolve_task


def model_errors(cfg: ExperimentConfig) -> list[str]:
    """Trainable resolves, its model builds, and every named layer exists."""
    try:
        task = resolve_task(cfg.trainable.name)
    except UnknownTrainable as exc:
        return [f"trainable.name: {exc}"]
    if cfg.trainable.model not in task.models:
        return [f"trainable.model: {cfg.trainable.model!r} not in {sorted(task.models)}"]
    try:
        model = task.build_model(cfg.trainable.model, **cfg.trainable.model_args)
    except TypeError as exc:
        return [f"trainable.model_args: {exc}"]
    problems = []
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}
    missing = [n for n in cfg.compression.prune.exclude if n not in layers]
    if missing:
        problems.append(
            f"compression.prune.exclude: no such layer {missing}; layers are {sorted(layers)}"
        )
    prune = cfg.compression.prune
    if prune.method == "structured":
        output_layer = list(layers)[-1]
        for name, layer in layers.items():
            if name == output_layer or name in prune.exclude:
                continue
            width = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            if int(width * (1 - prune.sparsity)) < 1:
                problems.append(
                    f"compression.prune.sparsity: {prune.sparsity} would remove every channel of "
                    f"layer {name!r} ({width} channels)"
                )
    return problems


def training_errors(cfg: ExperimentConfig) -> list[str]:
    problems = []
    prune, quant = cfg.compression.prune, cfg.compression.quant
    if quant.mode == "qat" and (quant.bits == 32 or cfg.finetune.epochs == 0):
        problems.append("compression.quant.mode: qat needs quant.bits < 32 and finetune.epochs > 0")
    if prune.schedule == "cubic" and (prune.method == "none" or cfg.finetune.epochs == 0):
        problems.append(
            "compression.prune.schedule: cubic needs a prune.method and finetune.epochs > 0"
        )
    if prune.method != "none" and prune.sparsity == 0:
        problems.append("compression.prune.sparsity: must be > 0 when prune.method is set")
    fail = cfg.faults.fail_at_epoch
    if fail is not None and fail >= cfg.train.epochs:
        problems.append(f"faults.fail_at_epoch: {fail} >= train.epochs ({cfg.train.epochs})")
    if cfg.faults.fail_rank >= cfg.scaling.num_workers:
        problems.append(f"faults.fail_rank: {cfg.faults.fail_rank} >= scaling.num_workers")
    return problems


def assignment_error(base: dict[str, Any], values: dict[str, Any]) -> str | None:
    """Why setting ``values`` (dotted keys) on ``base`` gives an invalid config, or None."""
    from pydantic import ValidationError

    from accelab.config.loader import format_validation_error, set_dotted
    from accelab.errors import ConfigError

    trial = copy.deepcopy(base)
    try:
        for key, value in values.items():
            set_dotted(trial, key.split("."), value)
        ExperimentConfig.model_validate(trial)
    except ValidationError as exc:
        return "; ".join(line.split(": ", 1)[1] for line in format_validation_error(exc, "x"))
    except ConfigError as exc:
        return "; ".join(exc.messages)
    return None


def sweep_errors(cfg: ExperimentConfig) -> list[str]:
    """Every searched key exists and every value it can take validates."""
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
    base = cfg.model_dump(exclude={"sweep"})
    for key, dist in cfg.sweep.space.items():
        if dist.kind in ("grid", "choice"):
            values = list(getattr(dist, dist.kind))
            if not values:
                problems.append(f"sweep.space.{key}.{dist.kind}: empty list")
        else:
            low, high = getattr(dist, dist.kind)
            if not low < high:
                problems.append(
                    f"sweep.space.{key}.{dist.kind}: low must be < high, got [{low}, {high}]"
                )
            values = [low, high - 1 if dist.kind == "randint" else high]
        for value in values:
            if why := assignment_error(base, {key: value}):
                problems.append(f"sweep.space.{key}: value {value!r} is invalid: {why}")
                break
    for i, variant in enumerate(cfg.sweep.variants):
        overlap = sorted(set(variant) & set(cfg.sweep.space))
        if overlap:
            problems.append(
                f"sweep.variants[{i}]: {overlap} also in sweep.space; set each key in one place"
            )
        elif why := assignment_error(base, variant):
            problems.append(f"sweep.variants[{i}]: {why}")
    return problems


def semantic_errors(cfg: ExperimentConfig) -> list[str]:
    return training_errors(cfg) + model_errors(cfg) + sweep_errors(cfg)
