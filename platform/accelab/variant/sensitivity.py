"""Sensitivity and the automatic float fallback on a task's validation split: the glue
between ``compress.sensitivity`` (which layer, which setting) and ``measure`` (the
metric per example, the paired drop and its interval).

The validation split only: the test split stays for the report, so choosing which layers
fall back does not peek at the numbers the variant is judged by.

The ranking (each layer alone) is measured on torch fake-quant, cheap and close enough to
order layers; every step of the search (the whole model with some layers in float) is
measured on what ships: the model built for the primary target, paired against the dense
torch model as the judge does, so step 0 with nothing in float IS the validation drop the
variant then reports (ORT's int4 MatMulNBits is asymmetric block-wise, torch's fake-quant
symmetric per channel: on pylm +0.74 % vs +0.01 %).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn
from torch.utils.data import Dataset

from accelab.compress.pipeline import compress_for_training
from accelab.compress.prune import prunable_layers
from accelab.compress.quant import calibrate, prepare_fake_quant
from accelab.compress.recipe import float_layers, with_float
from accelab.compress.sensitivity import (
    Fallback,
    Row,
    Setting,
    fallback_search,
    layer_sensitivity,
)
from accelab.config.schema import ExperimentConfig, PruneConfig, QuantConfig
from accelab.measure import TorchRunner, drop, per_example
from accelab.measure.quality import drop_unit, format_drop
from accelab.stats import Estimate
from accelab.variant.judge import Dense
from accelab.variant.setup import Setup
from accelab.variant.targets import (
    EXPORT_CHECK_EXAMPLES,
    Exports,
    build_on,
    strip_for_export,
    targets_of,
)
from trainables.base import Task, examples_of


@dataclass
class ValDrop:
    """The validation drop of any model against ``model`` (the dense one), paired on the
    same examples; the dense model's per-example values are computed once."""

    task: Task
    val: Dataset
    base: Tensor
    threads: int = 1

    @classmethod
    def of(cls, model: nn.Module, task: Task, val: Dataset, threads: int = 1) -> ValDrop:
        return cls(task, val, cls.values(model, task, val, threads), threads)

    @staticmethod
    def values(model: nn.Module, task: Task, val: Dataset, threads: int) -> Tensor:
        return per_example(TorchRunner(model, threads=threads), val, task)

    def __call__(self, model: nn.Module) -> Estimate:
        variant = self.values(model, self.task, self.val, self.threads)
        return drop(self.base, variant, self.task.metric)


@dataclass
class ShippedDrop:
    """The validation drop of ``model`` (pruned, not quantized) quantized as a
    ``QuantConfig`` says and built for the config's primary target (``build_on``, as the
    judge builds it; the fp32 ONNX export made once and shared), paired against the dense
    torch model's values on the same examples. ``backend`` is what the last step ran on."""

    dense: Dense
    cfg: ExperimentConfig
    model: nn.Module
    exports: Exports | None = None
    backend: str | None = None

    def __call__(self, quant: QuantConfig) -> float:
        cfg = self.cfg.model_copy(deep=True)
        cfg.compression = cfg.compression.model_copy(
            update={"prune": PruneConfig(), "quant": quant}  # pruned already: quantize only
        )
        model = compress_for_training(copy.deepcopy(self.model), cfg.compression,
                                      self.dense.task, self.dense.calibration)  # fmt: skip
        if self.exports is None:
            self.exports = Exports(strip_for_export(self.model))
        check = examples_of(self.dense.splits.test, EXPORT_CHECK_EXAMPLES)[0]
        target = targets_of(cfg)[0]
        built = build_on(target.runtime, model, cfg, self.dense.task, self.exports, check,
                         self.dense.calibration)  # fmt: skip
        if built.runner is None:
            raise FallbackTargetError(f"{target.label} ({built.backend}): {built.error}")
        self.backend = built.backend
        values = per_example(built.runner, self.dense.splits.val, self.dense.task)
        return drop(self.dense.val_values, values, self.dense.task.metric).value


class FallbackTargetError(RuntimeError):
    """The primary target cannot build the model: the search measures fake-quant instead."""


def fallback_budget(cfg: ExperimentConfig) -> float:
    """``fallback_budget``, else the sweep's quality constraint, else one point."""
    quant = cfg.compression.quant
    if quant.fallback_budget is not None:
        return quant.fallback_budget
    return cfg.sweep.constraints.quality_drop if cfg.sweep else 0.01


def quantized_model(
    model: nn.Module, quant: QuantConfig, calibration: Callable[[], list[Tensor]] | None = None
) -> nn.Module:
    """A fake-quantized copy of ``model`` as ``quant`` says (its per-layer recipe too);
    activations calibrated on ``calibration()`` (training batches) when quantized."""
    out = prepare_fake_quant(copy.deepcopy(model), quant.bits, quant.activations,
                             recipe=quant.layers)  # fmt: skip
    if quant.activations and calibration is not None:
        calibrate(out, calibration(), quant.calibration_batches)
    return out.eval()


@dataclass
class AutoFallback:
    ranking: list[Row]  # each quantized layer alone at quant.bits, most sensitive first
    result: Fallback
    budget: float
    measured_on: str = "torch fake-quant"  # what the search's steps measured

    @property
    def recipe_update(self) -> dict[str, None]:
        return {name: None for name in self.result.float_layers}


def auto_fallback(
    model: nn.Module,
    quant: QuantConfig,
    drop_of: Callable[[nn.Module], Estimate],
    budget: float,
    calibration: Callable[[], list[Tensor]] | None = None,
    shipped: ShippedDrop | None = None,
) -> AutoFallback:
    """Rank the layers ``quant`` quantizes by their drop alone (weights at ``quant.bits``),
    then find the fewest most sensitive ones to keep in float so that the whole model,
    quantized as ``quant`` says, drops at most ``budget`` on the validation split: as
    ``shipped`` builds it when given (the primary target), else fake-quantized on torch."""
    names = [name for name, _ in prunable_layers(model)]
    already = set(float_layers(names, quant.layers))
    candidates = [name for name in names if name not in already]
    rows = layer_sensitivity(model, [Setting("quant", quant.bits)], drop_of, candidates)
    ranking = [row.layer for row in rows]

    def drop_with_float(layers: list[str]) -> float:
        q = quant.model_copy(update={"layers": with_float(quant.layers, layers)})
        if shipped is not None:
            return shipped(q)
        return drop_of(quantized_model(model, q, calibration)).value

    measured_on = "torch fake-quant"
    try:
        result = fallback_search(ranking, drop_with_float, budget)
        if shipped is not None:
            measured_on = shipped.backend or "n/a"
    except FallbackTargetError as exc:  # e.g. an export that fails: the judge says so too
        shipped, measured_on = None, f"torch fake-quant (primary target unavailable: {exc})"
        result = fallback_search(ranking, drop_with_float, budget)
    return AutoFallback(rows, result, budget, measured_on)


def apply_fallback(cfg: ExperimentConfig, found: AutoFallback) -> ExperimentConfig:
    """A copy of ``cfg`` whose per-layer recipe keeps the layers ``found`` in float, and
    whose fallback is done (so that nothing downstream searches again)."""
    quant = cfg.compression.quant
    layers = with_float(quant.layers, found.result.float_layers)
    new = cfg.model_copy(deep=True)
    new.compression.quant = quant.model_copy(update={"layers": layers, "fallback": "none"})
    return new


def resolve_fallback(setup: Setup, dense: Dense, echo=None) -> tuple[Setup, AutoFallback | None]:
    """With ``compression.quant.fallback: auto``, the setup whose per-layer recipe keeps
    the layers found in float (and ``fallback: none``); otherwise the setup unchanged.
    Measured on the validation split on torch, after any one-shot pruning of the config,
    with the config's quantization: layers ranked on torch fake-quant, every step of the
    search measured on the model as the primary target builds it (what ships)."""
    cfg = setup.cfg
    quant = cfg.compression.quant
    if quant.fallback != "auto" or quant.bits > 8:  # bits 16/32: nothing to fall back from
        return setup, None
    unquantized = cfg.compression.model_copy(deep=True)
    unquantized.quant = QuantConfig()  # pruning only: the quantization is what is searched
    model = compress_for_training(
        copy.deepcopy(dense.model), unquantized, dense.task, dense.calibration
    )
    drop_of = ValDrop(dense.task, dense.splits.val, dense.val_values, cfg.measure.threads)
    batches = functools.partial(dense.calibration.batches, quant.calibration_batches)
    shipped = ShippedDrop(dense, cfg, model)
    found = auto_fallback(model, quant, drop_of, fallback_budget(cfg), batches, shipped)
    return setup.with_config(apply_fallback(cfg, found)), found


def describe_fallback(found: AutoFallback, relative: bool = False) -> str:
    """One line: which layers fell back, the drop reached, and the measured steps."""
    r = found.result
    kept = ", ".join(r.float_layers) or "none"
    steps = ", ".join(f"{k} float: {format_drop(d, relative=relative)}" for k, d in r.steps)
    verdict = "within" if r.met else "NOT within"
    if r.float_layers and len(r.float_layers) == len(found.ranking):
        verdict = "(every layer it quantizes fell back: this variant is not quantized) within"
    return (
        f"float fallback (auto): kept in float [{kept}]; validation drop "
        f"{format_drop(r.drop, relative=relative)} {drop_unit(relative)} {verdict} the budget "
        f"{format_drop(found.budget, relative=relative)} after {len(r.steps)} measured step(s) "
        f"on {found.measured_on} ({steps}); ranking (each layer alone, torch fake-quant): "
        f"{', '.join(row.layer for row in found.ranking)}"
    )


def fallback_metrics(found: AutoFallback) -> dict[str, float]:
    """The search's outcome as MLflow metrics (the layer names go to a tag)."""
    r = found.result
    return {
        "fallback_float_layers": float(len(r.float_layers)),
        "fallback_steps": float(len(r.steps)),
        "fallback_val_drop": r.drop,
        "fallback_met": float(r.met),
    }


def fallback_tag(found: AutoFallback) -> str:
    """The layers kept in float, most sensitive first, comma-separated ("" for none)."""
    return ",".join(found.result.float_layers)
