"""One compression variant as model transforms: prune -> fake-quant (trainable form),
then finalize -> the deployable model on a real kernel, or a simulated one.

Everything here is deterministic given the dense weights, so every DDP rank (and every
restarted worker) derives the same compressed model and the same pruning masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from accelab.checkpoint import load_model_state, unwrap
from accelab.compress.prune import (
    GradualPruner,
    apply_masks,
    apply_structured,
    apply_unstructured,
    prunable_layers,
    sparsity_report,
)
from accelab.compress.quant import (
    SIMULATED_BACKEND,
    calibrate,
    convert_int8_dynamic,
    convert_torchao,
    prepare_fake_quant,
    real_kernel_for,
)
from accelab.config.schema import ExperimentConfig
from trainables.base import Task

DENSE_BACKEND = "fp32-dense"


def compress_for_training(
    model: nn.Module, cfg: ExperimentConfig, task: Task, calib_data=None
) -> nn.Module:
    """Apply the one-shot parts of ``cfg.compression`` in place: structured pruning,
    unstructured pruning (unless on the cubic schedule), then fake quantization."""
    prune, quant = cfg.compression.prune, cfg.compression.quant
    if prune.method == "structured":
        apply_structured(model, prune.sparsity, task.example_input(1), prune.exclude)
    elif prune.method == "unstructured" and prune.schedule == "oneshot":
        apply_unstructured(model, prune.sparsity, prune.scope, prune.exclude)
    if quant.bits < 32:
        prepare_fake_quant(model, quant.bits, quant.activations)
        if quant.activations and calib_data is not None:
            calibrate(model, calib_data, quant.calibration_batches)
    return model


def zero_masks(model: nn.Module) -> dict[str, Tensor]:
    """Keep-masks of the weights that are zero now (one-shot unstructured pruning)."""
    return {name: m.weight.detach() != 0 for name, m in prunable_layers(model)}


@dataclass
class CompressionHooks:
    """Fine-tuning hooks for the per-worker loop (bound methods go into ``LoopHooks``).

    ``transform`` rebuilds the compressed model from the dense weights on each worker;
    ``after_step`` keeps pruned weights at zero (or advances the cubic schedule)."""

    config: dict
    dense_weights: str
    steps_per_epoch: int = 1
    masks: dict[str, Tensor] = field(default_factory=dict)
    pruner: GradualPruner | None = None

    def transform(self, model: nn.Module, task: Task) -> nn.Module:
        cfg = ExperimentConfig.model_validate(self.config)
        model.load_state_dict(load_model_state(Path(self.dense_weights)))
        calib = calibration_batches(task, cfg)
        model = compress_for_training(model, cfg, task, calib)
        prune = cfg.compression.prune
        if prune.method == "unstructured" and prune.schedule == "cubic":
            total = max(1, self.steps_per_epoch * cfg.finetune.epochs)
            self.pruner = GradualPruner(
                final_sparsity=prune.sparsity,
                total_steps=int(total * 0.75),
                frequency=max(1, self.steps_per_epoch // 4),
                scope=prune.scope,
                exclude=tuple(prune.exclude),
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

    def extra_metrics(self, model: nn.Module, epoch: int) -> dict[str, float]:
        return {"sparsity": float(sparsity_report(unwrap(model))["sparsity"])}


def calibration_batches(task: Task, cfg: ExperimentConfig) -> list[Tensor] | None:
    """Training-split batches for activation observers (never the test split)."""
    if not cfg.compression.quant.activations or cfg.compression.quant.bits == 32:
        return None
    x = task.load_splits(cfg.trainable.data_seed).train.tensors[0]
    size = cfg.train.batch_size
    return [
        x[i : i + size]
        for i in range(0, min(len(x), size * cfg.compression.quant.calibration_batches), size)
    ]


@dataclass
class Deployable:
    model: nn.Module
    backend: str
    simulated: bool
    kind: str  # fp32 | int8 | fake-quant | torchao


def finalize(model: nn.Module, cfg: ExperimentConfig, device_type: str = "cpu") -> Deployable:
    """The model as it would ship: real low-bit kernels where they exist, else simulated."""
    model = unwrap(model).eval()
    quant = cfg.compression.quant
    if quant.bits == 32:
        return Deployable(model, DENSE_BACKEND, False, "fp32")
    backend = real_kernel_for(quant.bits, device_type) if quant.real_kernel else None
    if backend == "int8-x86":
        return Deployable(convert_int8_dynamic(model), backend, False, "int8")
    if backend and backend.startswith("torchao"):
        from accelab.compress.quant import strip_fake_quant

        return Deployable(
            convert_torchao(strip_fake_quant(model), quant.bits), backend, False, "torchao"
        )
    return Deployable(model, SIMULATED_BACKEND, True, "fake-quant")
