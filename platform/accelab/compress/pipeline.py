"""One compression variant as model transforms.

    compress_for_training: prune (structured, or one-shot unstructured), and for ``qat``
                           wrap layers in fake quantization so fine-tuning sees it.
    finalize:              for ``ptq`` quantize now (after any fine-tuning, in fp32),
                           calibrating activations on training data; then convert to a
                           real low-bit kernel where one exists, else keep it simulated.

So ``ptq`` fine-tunes in fp32 and quantizes afterwards, ``qat`` fine-tunes through the
fake quantizers. Everything is deterministic given the dense weights, so every DDP rank
(and every restarted worker) derives the same compressed model and the same masks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from accelab.backends import SIMULATED, TORCH_BF16, TORCH_FP32, TORCH_INT8_STATIC, backend_for
from accelab.compress.distill import Distiller, frozen
from accelab.compress.heads import apply_heads
from accelab.compress.prune import (
    GradualPruner,
    apply_masks,
    apply_structured,
    apply_unstructured,
    prunable_layers,
    sparsity_report,
)
from accelab.compress.quant import (
    calibrate,
    convert_int8_dynamic,
    convert_int8_static,
    convert_torchao,
    has_fake_quant,
    prepare_fake_quant,
    strip_fake_quant,
)
from accelab.config.schema import (
    CompressionConfig,
    FinetuneConfig,
    PruneConfig,
    QuantConfig,
    TrainableConfig,
)
from accelab.tasks import model_of
from accelab.tracking import names
from accelab.training.checkpoint import load_model_state, unwrap
from trainables.base import Task, examples_of


def output_layer(model: nn.Module) -> str:
    """Name of the last Linear/Conv2d: the classifier/LM head, kept unless asked otherwise."""
    return prunable_layers(model)[-1][0]


@dataclass(frozen=True)
class Calibration:
    """Where activation observers and static quantization take their inputs: the first
    training examples (never the validation or test split), in batches of ``batch_size``;
    ``load_train`` is called only when a quantizer needs them."""

    load_train: Callable[[], Dataset]
    batch_size: int

    @classmethod
    def of(cls, task: Task, data_seed: int, batch_size: int) -> Calibration:
        return cls(lambda: task.load_splits(data_seed).train, batch_size)

    def batches(self, count: int) -> list[Tensor]:
        x = examples_of(self.load_train(), self.batch_size * count)[0]
        return [x[i : i + self.batch_size] for i in range(0, len(x), self.batch_size)]


def calibration_from(task: Task, data_seed: int, batch_size: int, batches: int) -> list[Tensor]:
    """``batches`` training-split batches of ``task`` (for a model outside a config)."""
    return Calibration.of(task, data_seed, batch_size).batches(batches)


def prune_exclude(model: nn.Module, prune: PruneConfig) -> list[str]:
    keep = [] if prune.prune_output_layer else [output_layer(model)]
    return list(dict.fromkeys([*prune.exclude, *keep]))


def add_fake_quant(model: nn.Module, quant: QuantConfig, calibration: Calibration) -> nn.Module:
    """Wrap layers for ``quant.bits`` fake quantization (per layer as ``quant.layers``
    says); calibrate activations on training data."""
    model = prepare_fake_quant(model, quant.bits, quant.activations, recipe=quant.layers)
    if quant.activations:
        calibrate(model, calibration.batches(quant.calibration_batches), quant.calibration_batches)
    return model


def compress_for_training(
    model: nn.Module, compression: CompressionConfig, task: Task, calibration: Calibration
) -> nn.Module:
    """Apply the one-shot parts of ``compression`` in place: structured or head pruning,
    unstructured pruning (unless on the cubic schedule), and fake quantization for QAT."""
    prune, quant = compression.prune, compression.quant
    if prune.method == "structured":
        apply_structured(
            model, prune.sparsity, task.example_input(1), prune_exclude(model, prune),
            task.structured_only, prune.layers,
        )  # fmt: skip
    elif prune.method == "heads":
        apply_heads(model, prune.sparsity, prune.exclude)
    elif prune.method == "unstructured" and prune.schedule == "oneshot":
        apply_unstructured(
            model, prune.sparsity, prune.scope, prune_exclude(model, prune), prune.layers
        )
    if quant.bits < 32 and quant.mode == "qat":
        model = add_fake_quant(model, quant, calibration)
    return model


def zero_masks(model: nn.Module) -> dict[str, Tensor]:
    """Keep-masks of the weights that are zero now (one-shot unstructured pruning)."""
    return {name: m.weight.detach() != 0 for name, m in prunable_layers(model)}


@dataclass
class CompressionHooks:
    """Fine-tuning hooks for the per-worker loop (bound methods go into ``LoopHooks``).

    ``transform`` rebuilds the compressed model from the dense weights on each worker;
    ``after_step`` keeps pruned weights at zero (or advances the cubic schedule);
    ``batch_loss`` distills from the dense model when ``finetune.distill.weight`` > 0.
    It travels to the Ray Train workers with the sections it reads (pickled)."""

    trainable: TrainableConfig  # the teacher's architecture, the calibration split's seed
    compression: CompressionConfig
    finetune: FinetuneConfig
    batch_size: int  # of calibration batches (train.batch_size)
    dense_weights: str
    steps_per_epoch: int = 1
    masks: dict[str, Tensor] = field(default_factory=dict)
    pruner: GradualPruner | None = None
    distiller: Distiller | None = None

    def transform(self, model: nn.Module, task: Task) -> nn.Module:
        model.load_state_dict(load_model_state(Path(self.dense_weights)))
        prune = self.compression.prune
        exclude = prune_exclude(model, prune)
        calibration = Calibration.of(task, self.trainable.data_seed, self.batch_size)
        model = compress_for_training(model, self.compression, task, calibration)
        if prune.method == "unstructured" and prune.schedule == "cubic":
            total = max(1, self.steps_per_epoch * self.finetune.epochs)
            self.pruner = GradualPruner(
                final_sparsity=prune.sparsity,
                total_steps=max(1, int(total * prune.ramp_fraction)),
                frequency=max(1, self.steps_per_epoch // 4),
                scope=prune.scope,
                exclude=tuple(exclude),
                layers=tuple(prune.layers.items()),
            )
        elif prune.method == "unstructured":
            self.masks = zero_masks(model)
        return model

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        if self.pruner is not None:
            self.pruner.step(unwrap(model), step)
        elif self.masks:
            apply_masks(unwrap(model), self.masks)

    def batch_loss(self, task: Task, device: torch.device) -> Distiller | None:
        """The distillation loss with the dense model as a frozen teacher on ``device``
        (never wrapped in DDP), or None (the task loss) when distillation is off."""
        distill = self.finetune.distill
        if distill.weight == 0:
            return None
        teacher = model_of(task, self.trainable)
        teacher.load_state_dict(load_model_state(Path(self.dense_weights)))
        self.distiller = Distiller(
            frozen(teacher.to(device)), task.loss, distill.weight, distill.temperature
        )
        return self.distiller

    def extra_metrics(self, model: nn.Module, epoch: int) -> dict[str, float]:
        model = unwrap(model)
        exclude = prune_exclude(model, self.compression.prune)
        metrics = {names.M_SPARSITY: float(sparsity_report(model, exclude)["sparsity"])}
        if self.distiller is not None:  # this rank's mean T^2 * KL over the epoch
            metrics["distill_loss"] = self.distiller.epoch_mean()
        return metrics


@dataclass
class Deployable:
    model: nn.Module
    backend: str
    simulated: bool
    kind: str  # fp32 | bf16 | int8 | int8-static | fake-quant | torchao


def finalize(
    model: nn.Module, quant: QuantConfig, calibration: Calibration, device_type: str = "cpu"
) -> Deployable:
    """The model as it ships on torch: real low-bit kernels where they exist, else
    simulated. ``ptq`` quantizes here, after any fine-tuning (the input is not changed)."""
    model = copy.deepcopy(unwrap(model)).eval()
    real = quant.real_kernel or quant.bits == 16  # bf16 has no simulation: it is real
    backend = backend_for("torch", quant.bits, quant.scheme, device_type) if real else None
    if backend == TORCH_FP32:
        return Deployable(model.to(device_type), backend, False, "fp32")
    if backend == TORCH_BF16:
        return Deployable(model.to(device_type, torch.bfloat16), backend, False, "bf16")
    if backend is not None and backend.startswith("torchao"):
        return Deployable(
            convert_torchao(strip_fake_quant(model).to(device_type), quant.bits), backend, False,
            "torchao",
        )  # fmt: skip
    if backend == TORCH_INT8_STATIC:
        return Deployable(
            convert_int8_static(
                model, calibration.batches(quant.calibration_batches), quant.layers
            ),
            backend,
            False,
            "int8-static",
        )
    if backend is not None:  # quantizes the weights itself (a qat model's wrappers are stripped)
        return Deployable(convert_int8_dynamic(model, quant.layers), backend, False, "int8")
    if not has_fake_quant(model):  # ptq: quantize the fine-tuned fp32 weights now
        model = add_fake_quant(model, quant, calibration).eval()
    return Deployable(model.to(device_type), SIMULATED, True, "fake-quant")
