"""Deployment targets: a compressed model built for each runtime it may ship on, and
measured there next to the dense model on the same runtime and on torch.

    torch        torch-fp32 | torch-int8-x86 (dynamic, Linear) | torch-int8-x86-static (FX)
    onnxruntime  ort-fp32 | ort-int8-dynamic | ort-int8-static (QDQ, calibrated on train data)
                 | ort-int4-weight-only-b<block size> (bits 4: MatMulNBits, weights only)
    openvino     openvino-f32 (bits 32) | openvino-bf16 (bits 16: the default hint, named
                 after what the CPU runs) | openvino-int8-nncf (bits 8: NNCF PTQ, calibrated
                 on train data; transformer preset for language models)
                 | openvino-int4-weight-only-g<group size> (bits 4: NNCF int4 weight
                 compression, data-free); ``+bf16`` where the float parts run bf16

Layers a per-layer recipe keeps in float are excluded from ONNX Runtime's quantizers
(``nodes_to_exclude``) and NNCF's (``ignored_scope``); the backend says so (``-float-<keys>``).

A bit-width with no real kernel on a runtime is simulated there (quality, no speed). An
ONNX export that fails, or whose fp32 outputs differ from torch's by more than
``EXPORT_ATOL`` on the test split, makes that target unavailable for the model, and the
reason is recorded instead of a number.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import Tensor, nn
from torch.utils.data import Dataset

from accelab.backends import ORT_FP32, OV_F32, SIMULATED, TORCH_FP32, backend_for, ov_int4
from accelab.compress.pipeline import Calibration, finalize
from accelab.compress.quant import strip_fake_quant
from accelab.compress.recipe import float_name
from accelab.config.schema import ExperimentConfig, MeasureConfig, target_key
from accelab.export.onnx import (
    EXPORT_ATOL,
    ExportError,
    OrtRecipe,
    max_abs_diff,
    quantize,
    quantize_int4,
    to_onnx,
)
from accelab.export.openvino import compress_int4, from_onnx, quantize_int8
from accelab.export.runner import OrtRunner, OvRunner
from accelab.measure import (
    Comparison,
    GenerateRunner,
    Latency,
    Measurement,
    Runner,
    TorchRunner,
    compare,
    describe,
    first_batch,
    per_example,
    time_runners,
)
from accelab.measure.latency import speedup
from accelab.measure.quality import drop, estimate
from accelab.stats import Estimate
from accelab.training.checkpoint import unwrap
from trainables.base import Task, examples_of


@dataclass(frozen=True)
class TargetSpec:
    runtime: str  # torch | onnxruntime | openvino
    batch_size: int
    mode: str = "forward"  # forward | generate (per new token, batch 1)
    tokens: int = 16

    @property
    def key(self) -> str:
        return target_key(self.runtime, self.batch_size, self.mode)

    @property
    def label(self) -> str:
        if self.mode == "generate":
            return f"{self.runtime}, generation per token"
        return f"{self.runtime}, batch {self.batch_size}"


def targets_of(cfg: ExperimentConfig) -> list[TargetSpec]:
    m = cfg.measure
    return [TargetSpec(t.runtime, m.batch_of(t), t.mode, t.tokens) for t in m.targets]


@dataclass
class Built:
    """A model on one runtime: a runner, or why there is none."""

    backend: str
    runner: Runner | None = None
    error: str | None = None
    onnx: bytes | None = None  # what ONNX Runtime runs (logged as an export of the run)
    export_max_abs_diff: float | None = None


@dataclass
class Exports:
    """ONNX exports of one fp32 model, made once and shared by the targets that need them
    (ONNX Runtime runs them; OpenVINO converts the same fp32 export)."""

    model: nn.Module
    fp32: bytes | None = None
    error: str | None = None
    max_abs_diff: float | None = None
    int8: dict[tuple, bytes] = field(default_factory=dict)  # (scheme, recipe) -> ONNX
    int4: dict[tuple, bytes] = field(default_factory=dict)  # (block, layers) -> MatMulNBits
    # "fp32" | ("int8", layers) | ("int4", group size, layers): openvino.Model
    openvino: dict[object, object] = field(default_factory=dict)


EXPORT_CHECK_EXAMPLES = 256  # the export is checked against torch on this many test inputs


def export_fp32(
    x: Exports, cfg: ExperimentConfig, task: Task, check_inputs: Tensor | None = None
) -> Exports:
    """Export ``x.model`` to ONNX once; with ``check_inputs``, check it against torch."""
    if x.fp32 is None and x.error is None:
        try:
            x.fp32 = to_onnx(x.model, task.example_input(2), cfg.measure.onnx_exporter)
            if check_inputs is not None:
                inputs = check_inputs[:EXPORT_CHECK_EXAMPLES]
                x.max_abs_diff = max_abs_diff(x.model, x.fp32, inputs)
            if x.max_abs_diff is not None and x.max_abs_diff > EXPORT_ATOL:
                x.error = (
                    f"ONNX export differs from torch by up to {x.max_abs_diff:.2e} "
                    f"(> {EXPORT_ATOL:g}) on the test split"
                )
        except ExportError as exc:
            x.error = str(exc)
    return x


def calibration_for(cfg: ExperimentConfig, task: Task, given: Calibration | None) -> Calibration:
    """``given`` (a command's setup shares its loaded training split), else the config's."""
    if given is not None:
        return given
    return Calibration.of(task, cfg.trainable.data_seed, cfg.train.batch_size)


def onnx_of(
    x: Exports, cfg: ExperimentConfig, task: Task, calibration: Calibration | None = None
) -> bytes:
    """What ONNX Runtime runs for the config's bit-width: the fp32 export, its int8
    quantization (made once per scheme and recipe, calibrated on training data), or its
    int4 weight-only MatMulNBits model (made once per block size; no calibration)."""
    q = cfg.compression.quant
    if q.bits == 4:
        key = (q.block_size, tuple(q.layers.items()))
        if key not in x.int4:
            x.int4[key] = quantize_int4(x.fp32, q.block_size, q.layers)
        return x.int4[key]
    if q.bits != 8:
        return x.fp32
    recipe = OrtRecipe(**q.ort_recipe)
    if (q.scheme, recipe) not in x.int8:
        batches = calibration_for(cfg, task, calibration).batches(q.calibration_batches)
        x.int8[q.scheme, recipe] = quantize(x.fp32, q.scheme, batches, recipe)
    return x.int8[q.scheme, recipe]


def ort_backend(cfg: ExperimentConfig) -> str | None:
    """The ONNX Runtime backend name, with the recipe where it is not accelab's default."""
    q = cfg.compression.quant
    backend = backend_for("onnxruntime", q.bits, q.scheme, block_size=q.block_size)
    recipe = OrtRecipe(**q.ort_recipe)
    if backend and q.bits == 4:  # weight-only: of the recipe, only the float layers apply
        return backend + OrtRecipe(layers=recipe.layers).suffix
    return backend + recipe.suffix if backend and q.bits == 8 else backend


def openvino_of(
    x: Exports, cfg: ExperimentConfig, task: Task, bits: int | None = None,
    calibration: Calibration | None = None,
):  # fmt: skip
    """What OpenVINO runs for the config's bit-width: the fp32 export converted (bits 32 and
    16: the precision is a compile hint), its NNCF int8 (made once per per-layer recipe,
    calibrated on training data; the transformer preset for a language model), or its NNCF
    int4 weight compression (made once per group size and recipe; no calibration)."""
    if "fp32" not in x.openvino:
        x.openvino["fp32"] = from_onnx(x.fp32)
    q = cfg.compression.quant
    bits = q.bits if bits is None else bits
    layers = tuple(q.layers.items())
    key = {8: ("int8", layers), 4: ("int4", q.block_size, layers)}.get(bits, "fp32")
    if key not in x.openvino and bits == 8:
        batches = calibration_for(cfg, task, calibration).batches(q.calibration_batches)
        x.openvino[key] = quantize_int8(x.openvino["fp32"], batches, task.generates, q.layers)
    elif key not in x.openvino:
        x.openvino[key] = compress_int4(x.openvino["fp32"], q.block_size, q.layers)
    return x.openvino[key]


def ov_runner(
    ov_model, model: nn.Module, cfg: ExperimentConfig, threads: int, bits: int | None = None
) -> Runner:
    """bits (default: the config's) 32: the f32 hint; 16: the default hint; 8: NNCF int8 and
    4: NNCF int4 weights, at the default hint, named with the layers kept in float."""
    q = cfg.compression.quant
    bits = q.bits if bits is None else bits
    kind, precision = {32: ("fp", "f32"), 16: ("fp", None)}.get(bits, ("int8-nncf", None))
    if bits == 4:
        kind = ov_int4(q.block_size).removeprefix("openvino-")
    if bits in (4, 8) and (kept := float_name(q.layers)):
        kind += "-" + kept
    return OvRunner(ov_model, model, kind, precision, threads)


def build_on(
    runtime: str, model: nn.Module, cfg: ExperimentConfig, task: Task, exports: Exports,
    check_inputs: Tensor, calibration: Calibration | None = None,
) -> Built:  # fmt: skip
    """``model`` (pruned/fine-tuned, fake-quant wrapped for QAT) as it ships on ``runtime``."""
    calibration = calibration_for(cfg, task, calibration)
    q, threads = cfg.compression.quant, cfg.measure.threads
    if runtime == "onnxruntime" and q.bits == 16:
        return Built("n/a", error="bf16 has no ONNX Runtime backend here; measure it on torch")
    device = cfg.measure.device
    backend = (
        backend_for(runtime, q.bits, q.scheme, device, q.block_size) if q.real_kernel else None
    )
    if runtime == "onnxruntime" and backend is not None:
        backend = ort_backend(cfg)
    if runtime == "torch" or backend is None:
        d = finalize(model, q, calibration, cfg.measure.device)
        runner = TorchRunner(d.model, d.backend, cfg.measure.device, threads, d.simulated)
        return Built(d.backend, runner)
    export_fp32(exports, cfg, task, check_inputs)
    if exports.error:
        return Built(backend, error=exports.error)
    if runtime == "openvino":
        try:
            ov = openvino_of(exports, cfg, task, calibration=calibration)
        except ExportError as exc:  # e.g. a group size that does not divide a layer
            return Built(backend, error=str(exc))
        runner = ov_runner(ov, exports.model, cfg, threads)
        return Built(runner.backend, runner, export_max_abs_diff=exports.max_abs_diff)
    onnx = onnx_of(exports, cfg, task, calibration)
    runner = OrtRunner(onnx, exports.model, backend, threads)
    return Built(backend, runner, onnx=onnx, export_max_abs_diff=exports.max_abs_diff)


def variant_onnx(
    r, cfg: ExperimentConfig, task: Task, calibration: Calibration | None = None
) -> tuple[bytes, str, nn.Module]:
    """The ONNX model a variant ships as (the one an ONNX Runtime target measured, else
    made now the same way), its backend, and the fp32 torch model it came from."""
    for t in r.targets.values():
        if t.built is not None and t.built.onnx is not None:
            return t.built.onnx, t.backend, t.built.runner.model
    exports = export_fp32(Exports(strip_for_export(r.float_model)), cfg, task)
    if exports.error:
        raise ExportError(exports.error)
    backend = ort_backend(cfg)
    data = onnx_of(exports, cfg, task, calibration)
    return data, backend or "ort-fp32 (weights not quantized: simulated bit-width)", exports.model


@dataclass
class TargetResult:
    """One model on one target, next to the dense model on that runtime and on torch."""

    target: TargetSpec
    backend: str
    error: str | None = None
    measurement: Measurement | None = None
    family_baseline: Measurement | None = None
    torch_baseline: Measurement | None = None
    vs_family: Comparison | None = None  # speedup against the dense model on this runtime
    vs_torch: Comparison | None = None  # ... and against dense torch fp32 eager
    val_quality: Estimate | None = None
    val_drop: Estimate | None = None
    built: Built | None = None


@dataclass
class DenseRunners:
    """The dense model on torch (the reference for quality) and on each runtime."""

    torch: TorchRunner
    task: Task
    test_values: Tensor  # per-example quality of dense torch on the test split
    val_values: Tensor
    ort: Built | None = None
    ov: Built | None = None  # OpenVINO, f32 hint
    exports: Exports | None = None  # the dense model's ONNX export, shared by both runtimes

    def on(self, runtime: str, cfg: ExperimentConfig, check_inputs: Tensor) -> Runner | None:
        if runtime == "torch":
            return self.torch
        if self.exports is None:
            self.exports = export_fp32(Exports(self.torch.model), cfg, self.task, check_inputs)
        exports = self.exports
        if runtime == "openvino":
            if self.ov is None:
                self.ov = Built(OV_F32, error=exports.error)
                if not exports.error:
                    ov = openvino_of(exports, cfg, self.task, bits=32)
                    runner = ov_runner(ov, self.torch.model, cfg, self.torch.threads, bits=32)
                    self.ov = Built(runner.backend, runner)
            return self.ov.runner
        if self.ort is None:
            self.ort = Built(ORT_FP32, error=exports.error) if exports.error else None
            if self.ort is None:
                runner = OrtRunner(exports.fp32, self.torch.model, ORT_FP32, self.torch.threads)
                self.ort = Built(ORT_FP32, runner, onnx=exports.fp32)
        return self.ort.runner

    def error_on(self, runtime: str) -> str | None:
        built = self.ov if runtime == "openvino" else self.ort
        return built.error if built is not None else None


def measure_target(
    target: TargetSpec, built: Built, dense: DenseRunners, test_set: Dataset, val_set: Dataset,
    settings: MeasureConfig, cfg: ExperimentConfig,
) -> TargetResult:  # fmt: skip
    """Time the variant, the dense model on its runtime, and dense torch, interleaved in
    blocks (``measure.method``) at the target's batch size; quality on every test and validation example."""
    result = TargetResult(target, built.backend, built.error, built=built)
    check_inputs = examples_of(test_set)[0]
    family = dense.on(target.runtime, cfg, check_inputs)
    if built.runner is None or family is None:
        result.error = result.error or f"dense model: {dense.error_on(target.runtime)}"
        return result
    variant = built.runner
    runners: list[Runner] = [dense.torch] + ([] if family is dense.torch else [family])
    timed = runners + ([] if variant.simulated else [variant])
    batch = first_batch(test_set, target.batch_size)
    if target.mode == "generate":  # each timed run generates ``tokens`` new tokens
        timed_runs = [GenerateRunner(r, target.tokens) for r in timed]
        latencies = [per_token(x, target.tokens) for x in time_runners(timed_runs, batch, settings)]
    else:
        latencies = time_runners(timed, batch, settings)
    lat = dict(zip(map(id, timed), latencies, strict=True))
    values = per_example(variant, test_set, dense.task)
    family_values = (
        dense.test_values if family is dense.torch else per_example(family, test_set, dense.task)
    )

    def m(runner: Runner, vals: Tensor) -> Measurement:
        latency: Latency | None = lat.get(id(runner))
        return describe(runner, vals, dense.task, latency, len(batch))

    result.measurement = m(variant, values)
    result.family_baseline = m(family, family_values)
    result.torch_baseline = (
        result.family_baseline if family is dense.torch else m(dense.torch, dense.test_values)
    )
    result.vs_family = compare(result.torch_baseline, result.measurement, dense.test_values,
                               values, dense.task)  # fmt: skip
    result.vs_family = _with_speedup(result.vs_family, result.family_baseline, result.measurement)
    result.vs_torch = _with_speedup(result.vs_family, result.torch_baseline, result.measurement)
    val_values = per_example(variant, val_set, dense.task)
    result.val_quality = estimate(val_values, dense.task.metric)
    result.val_drop = drop(dense.val_values, val_values, dense.task.metric)
    return result


def per_token(latency: Latency, tokens: int) -> Latency:
    return Latency(latency.p50_ms / tokens, latency.p95_ms / tokens,
                   tuple(r / tokens for r in latency.rounds_p50_ms), 1, latency.method)  # fmt: skip


def _with_speedup(c: Comparison, base: Measurement, m: Measurement) -> Comparison:
    """``c`` with its speedup taken against ``base``'s latency (same blocks)."""
    timed = base.latency is not None and m.latency is not None
    return Comparison(
        speedup(base.latency, m.latency) if timed else None, c.drop,
        m.size_bytes / base.size_bytes, c.params_ratio,
    )  # fmt: skip


def strip_for_export(model: nn.Module) -> nn.Module:
    """The fp32 model ONNX Runtime quantizes itself (QAT wrappers removed, weights kept)."""
    return strip_fake_quant(copy.deepcopy(unwrap(model))).eval()


__all__ = ["SIMULATED", "TORCH_FP32", "Built", "DenseRunners", "Exports", "TargetResult",
           "TargetSpec", "build_on", "measure_target", "strip_for_export", "targets_of",
           "variant_onnx"]  # fmt: skip
