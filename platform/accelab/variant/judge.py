"""Judging a compressed model: on every deployment target, next to the dense model, with
its quality on the held-out test split (reported) and the validation split (selected on).

The first target is the primary one: its numbers carry the plain names (``speedup``,
``latency_p50_ms``, ``accuracy``); every other target's carry a ``.<target key>`` suffix
(``speedup.ort_b1``). ``speedup`` is against the dense model on the same runtime,
``speedup_vs_torch`` against dense torch fp32 eager; quality drops are against the dense
torch model (the reference), measured on the runtime itself.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from accelab.backends import TORCH_FP32
from accelab.compress.pipeline import Calibration, Deployable, finalize, prune_exclude
from accelab.compress.prune import layer_sparsity, sparsity_report
from accelab.config.schema import ExperimentConfig
from accelab.measure import Comparison, Measurement, TorchRunner, estimate, per_example
from accelab.stats import Estimate, median_interval
from accelab.tracking import names
from accelab.training.checkpoint import MODEL_FILE, load_model_state
from accelab.variant.setup import Setup
from accelab.variant.targets import (
    EXPORT_CHECK_EXAMPLES,
    Built,
    DenseRunners,
    Exports,
    TargetResult,
    build_on,
    measure_target,
    strip_for_export,
    targets_of,
)
from trainables.base import Splits, Task, examples_of

MB = 1024 * 1024


@dataclass
class Dense:
    """The dense model and what every judgement of a variant compares against."""

    model: nn.Module
    task: Task
    splits: Splits
    runners: DenseRunners
    calibration: Calibration  # training batches for every quantizer that calibrates

    @property
    def val_values(self):
        return self.runners.val_values

    @functools.cached_property
    def train_loss(self) -> float:
        """Computed when first asked for (only a fine-tune's loss check needs it)."""
        return train_loss(self.runners.torch, self.task, self.splits)


def load_dense(setup: Setup, dense_dir: Path) -> Dense:
    """The dense weights in the setup's model, with its per-example quality on the test
    and validation splits (on torch; other runtimes when a target first needs them)."""
    task, splits, m = setup.task, setup.splits, setup.cfg.measure
    model = setup.new_model()
    model.load_state_dict(load_model_state(dense_dir / MODEL_FILE))
    runner = TorchRunner(model.eval(), TORCH_FP32, m.device, m.threads)
    runners = DenseRunners(
        runner, task, per_example(runner, splits.test, task), per_example(runner, splits.val, task)
    )
    return Dense(model, task, splits, runners, setup.calibration)


TRAIN_LOSS_EXAMPLES = 2048  # a stable mean needs a sample, not a whole corpus (~23k LM windows)


def train_loss(runner: TorchRunner, task: Task, splits: Splits, batch: int = 256) -> float:
    """The model's mean loss (eval mode) on the first ``TRAIN_LOSS_EXAMPLES`` training
    examples, in batches: the yardstick for a fine-tune's loss, same examples for both."""
    x, y = examples_of(splits.train, TRAIN_LOSS_EXAMPLES)
    total = 0.0
    with runner.active():
        for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
            total += float(task.loss(runner(xb.to(runner.device)).float().cpu(), yb)) * len(xb)
    return total / len(x)


@dataclass
class VariantResult:
    targets: dict[str, TargetResult]  # by target key, the primary one first
    deployable: Deployable  # the torch model as it ships (saved with the run)
    float_model: nn.Module  # before conversion to low-bit kernels (layer shapes, sparsity)
    metrics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was decided on the way (printed)

    @property
    def primary(self) -> TargetResult:
        return next(iter(self.targets.values()))

    @property
    def baseline(self) -> Measurement:
        return self.primary.family_baseline

    @property
    def measurement(self) -> Measurement:
        return self.primary.measurement

    @property
    def comparison(self) -> Comparison:
        return self.primary.vs_family

    @property
    def val_quality(self) -> Estimate:
        return self.primary.val_quality

    @property
    def val_drop(self) -> Estimate:
        return self.primary.val_drop


def judge(dense: Dense, model: nn.Module, cfg: ExperimentConfig) -> VariantResult:
    """Build ``model`` for each target's runtime (once per runtime) and measure it there."""
    exports = Exports(strip_for_export(model))
    built: dict[str, Built] = {}
    results: dict[str, TargetResult] = {}
    check_inputs = examples_of(dense.splits.test, EXPORT_CHECK_EXAMPLES)[0]
    for target in targets_of(cfg):
        if target.runtime not in built:
            built[target.runtime] = build_on(target.runtime, model, cfg, dense.task, exports,
                                             check_inputs, dense.calibration)  # fmt: skip
        results[target.key] = measure_target(
            target, built[target.runtime], dense.runners, dense.splits.test, dense.splits.val,
            cfg.measure, cfg,
        )  # fmt: skip
        if results[target.key].error and target == targets_of(cfg)[0]:
            raise RuntimeError(f"primary target {target.label}: {results[target.key].error}")
    deployable = finalize(model, cfg.compression.quant, dense.calibration)
    result = VariantResult(results, deployable, model)
    result.metrics = variant_metrics(result, dense, cfg)
    return result


def interval(name: str, e: Estimate | None) -> dict[str, float]:
    return {} if e is None else {name: e.value, names.lo(name): e.lo, names.hi(name): e.hi}


def target_metrics(t: TargetResult, name: str, sfx: str) -> dict[str, float | None]:
    """One target's numbers, each name suffixed with ``sfx`` ("" for the primary target)."""
    if t.error:
        return {}
    m, fam, torch_base = t.measurement, t.family_baseline, t.torch_baseline
    latency = m.latency
    p50 = median_interval(latency.rounds_p50_ms) if latency else None
    out: dict[str, float | None] = {
        **interval(name, m.quality), **interval(names.drop(name), t.vs_family.drop),
        **interval(names.on_val(name), t.val_quality),
        **interval(names.drop(names.on_val(name)), t.val_drop),
        names.M_LATENCY_P50_MS: m.latency_p50_ms, names.M_LATENCY_P95_MS: m.latency_p95_ms,
        "latency_p50_ms_lo": p50.lo if p50 else None, "latency_p50_ms_hi": p50.hi if p50 else None,
        "timing_blocks": p50.n if p50 else None,  # blocks (or rounds) behind p50 and speedup
        "throughput_sps": m.throughput_sps,
        names.M_BASELINE_LATENCY_P50_MS: fam.latency_p50_ms,
        names.M_TORCH_LATENCY_P50_MS: torch_base.latency_p50_ms,
        **interval(names.M_SPEEDUP, t.vs_family.speedup),
        **interval(names.M_SPEEDUP_VS_TORCH, t.vs_torch.speedup),
        names.M_SIZE_MB: m.size_bytes / MB, names.M_SIZE_RATIO: t.vs_family.size_ratio,
        names.M_PACKED_SIZE_MB: m.packed_size_bytes / MB if m.packed_size_bytes else None,
        names.M_SIMULATED: float(m.simulated), "batch_size": m.batch_size,
        "export_max_abs_diff": t.built.export_max_abs_diff if t.built else None,
    }  # fmt: skip
    return {k + sfx: v for k, v in out.items()}


def variant_metrics(r: VariantResult, dense: Dense, cfg: ExperimentConfig) -> dict[str, float]:
    """The numbers a variant is judged by, as MLflow metrics (n/a speeds left out).
    ``<metric>`` is the task's metric (``accuracy`` for digits)."""
    name, p = dense.task.metric.name, r.primary
    out: dict[str, float | None] = {}
    for i, (key, t) in enumerate(r.targets.items()):
        out.update(target_metrics(t, name, names.suffix(key, primary=i == 0)))
    out.update({
        names.M_N_TEST: p.measurement.quality.n, "n_val": p.val_quality.n,
        names.baseline(name): estimate(dense.runners.test_values, dense.task.metric).value,
        names.baseline(names.on_val(name)): estimate(dense.val_values, dense.task.metric).value,
        names.baseline(names.M_SIZE_MB): p.torch_baseline.size_bytes / MB,
        "params": p.measurement.params, "nonzero_params": p.measurement.nonzero_params,
        "macs": p.measurement.macs, names.M_BITS: cfg.compression.quant.bits,
        # zeros among the weights this variant prunes (the output layer and exclude kept dense)
        names.M_SPARSITY: sparsity_report(
            r.float_model, prune_exclude(r.float_model, cfg.compression.prune)
        )["sparsity"],
        "overall_sparsity": sparsity_report(r.float_model)["sparsity"],
        **({names.layer_sparsity(layer): value for layer, value
            in layer_sparsity(r.float_model, dense.model).items()}
           if cfg.compression.prune.method != "none" else {}),
        # rounds only mean something to the rounds method (blocks: timing_blocks says how many)
        "threads": p.measurement.threads,
        "rounds": cfg.measure.rounds if cfg.measure.method == "rounds" else None,
    })  # fmt: skip
    if p.built is not None and p.built.runner is not None:  # e.g. next-token accuracy
        for key, fn in dense.task.secondary.items():
            out[key] = float(
                per_example(p.built.runner, dense.splits.test, dense.task, fn=fn).mean()
            )
    return {k: float(v) for k, v in out.items() if v is not None and not math.isnan(float(v))}
