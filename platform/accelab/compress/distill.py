"""Knowledge distillation for recovery fine-tuning: the dense model teaches its compressed copy.

The dense model's full output distribution carries more than the labels (which wrong
classes or tokens it finds likely), so the compressed model recovers towards the model it
replaces, not only towards the data (Hinton et al. 2015). The loss per batch is

    (1 - weight) * task_loss(student, y) + weight * T^2 * KL(softmax(teacher/T) || softmax(student/T))

with the KL averaged over every position (a language model's logits (B, T, V) count each
token); T^2 keeps the soft term's gradients on the scale of the hard term's as T grows.
The teacher runs frozen (eval mode, no grad) on the worker's own device, outside DDP: each
rank holds the same copy and needs no gradient sync for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from accelab.training.epoch import Loss


def distill_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)) over the last dim, mean over the
    rest (batch, and sequence positions for a language model). Computed in fp32."""
    t = temperature
    s = F.log_softmax(student.float().flatten(0, -2) / t, dim=-1)
    p = F.log_softmax(teacher.float().flatten(0, -2) / t, dim=-1)
    return F.kl_div(s, p, reduction="batchmean", log_target=True) * (t * t)


def frozen(teacher: nn.Module) -> nn.Module:
    """The teacher as it must run: eval mode (no dropout, fixed norm statistics), no grad."""
    return teacher.eval().requires_grad_(False)


@dataclass
class Distiller:
    """A batch loss ``(output, x, y) -> loss`` (``EpochContext.batch_loss``) that runs the
    teacher on the same inputs. Keeps the running mean of the distillation term, which
    ``epoch_mean`` hands out (and resets) once per epoch."""

    teacher: nn.Module
    task_loss: Loss
    weight: float
    temperature: float
    total: float = 0.0
    batches: int = 0

    def __call__(self, output: Tensor, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            target = self.teacher(x)
        soft = distill_loss(output, target, self.temperature)
        self.total += float(soft.detach())
        self.batches += 1
        return (1 - self.weight) * self.task_loss(output, y) + self.weight * soft

    def epoch_mean(self) -> float:
        mean = self.total / max(self.batches, 1)
        self.total, self.batches = 0.0, 0
        return mean
