"""Distillation during recovery fine-tuning (``finetune.distill``): the loss itself (zero at
the teacher, gradient towards it, T^2 scaling, language-model shapes), the frozen dense
teacher the fine-tune hooks build, the config checks, and one in-process fine-tune where
only the teacher knows the labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from accelab.compress.distill import Distiller, distill_loss, frozen
from accelab.compress.pipeline import CompressionHooks
from accelab.config.schema import ExperimentConfig
from accelab.preflight import training_errors
from accelab.training.checkpoint import save_model
from tests.helpers_torch import accuracy, train, trained_mlp
from trainables.digits import TASK

CPU = torch.device("cpu")


def hooks_of(cfg: ExperimentConfig, weights: Path) -> CompressionHooks:
    """The hooks a fine-tune's workers get, with the sections they read."""
    return CompressionHooks(cfg.trainable, cfg.compression, cfg.finetune, cfg.train.batch_size,
                            str(weights))  # fmt: skip


def config(distill: dict | None = None, epochs: int = 2, hidden=(32,)) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": list(hidden)}},
        "compression": {"prune": {"method": "unstructured", "sparsity": 0.5}},
        "finetune": {"epochs": epochs, **({"distill": distill} if distill else {})},
    })  # fmt: skip


def manual_kl(student, teacher, t: float) -> torch.Tensor:
    """KL(p || q) per row, written out: sum p * (log p - log q)."""
    p, q = F.softmax(teacher / t, -1), F.softmax(student / t, -1)
    return (p * (p.log() - q.log())).sum(-1)


def test_kl_term_is_zero_when_the_student_matches_the_teacher():
    logits = torch.randn(4, 7, 11)
    assert float(distill_loss(logits, logits.clone(), 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(logits + torch.randn_like(logits), logits, 2.0)) > 0.01


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_value_is_t_squared_times_the_mean_kl_over_positions(t):
    student, teacher = torch.randn(3, 5, 13), torch.randn(3, 5, 13)  # LM logits (B, T, V)
    expected = t * t * manual_kl(student, teacher, t).mean()
    assert float(distill_loss(student, teacher, t)) == pytest.approx(float(expected), rel=1e-5)
    flat = distill_loss(student.reshape(15, 13), teacher.reshape(15, 13), t)
    assert float(flat) == pytest.approx(float(distill_loss(student, teacher, t)), rel=1e-6)


@pytest.mark.parametrize("t", [1.0, 3.0])
def test_gradient_pulls_the_student_logits_towards_the_teacher(t):
    teacher = torch.randn(6, 10)
    student = torch.randn(6, 10, requires_grad=True)
    distill_loss(student, teacher, t).backward()
    # d/ds of T^2 * KL = T * (softmax(s/T) - softmax(t/T)) / rows: the T^2 keeps it O(1) in T
    expected = t * (F.softmax(student.detach() / t, -1) - F.softmax(teacher / t, -1)) / 6
    torch.testing.assert_close(student.grad, expected, rtol=1e-4, atol=1e-6)
    before = float(manual_kl(student.detach(), teacher, t).mean())
    after = float(manual_kl(student.detach() - 0.5 * student.grad, teacher, t).mean())
    assert after < before


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_distiller_mixes_task_and_soft_loss_by_weight(weight):
    teacher = torch.nn.Linear(8, 5)
    x, y, out = torch.randn(4, 8), torch.randint(0, 5, (4,)), torch.randn(4, 5)
    d = Distiller(teacher.eval(), F.cross_entropy, weight, 2.0)
    soft = distill_loss(out, teacher(x).detach(), 2.0)
    expected = (1 - weight) * F.cross_entropy(out, y) + weight * soft
    assert float(d(out, x, y)) == pytest.approx(float(expected), rel=1e-6)
    assert d.epoch_mean() == pytest.approx(float(soft), rel=1e-6)
    assert d.epoch_mean() == 0.0  # handed out once per epoch, then reset


def test_the_epoch_mean_averages_every_batch_of_the_epoch():
    teacher = torch.nn.Linear(8, 5).eval()
    d = Distiller(teacher, F.cross_entropy, 0.5, 2.0)
    softs = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        x, out = torch.randn(4, 8), torch.randn(4, 5)
        softs.append(float(distill_loss(out, teacher(x).detach(), 2.0)))
        d(out, x, torch.zeros(4, dtype=torch.long))
    assert d.epoch_mean() == pytest.approx(sum(softs) / 3, rel=1e-6)
    d(out, x, torch.zeros(4, dtype=torch.long))  # the next epoch counts from zero
    assert d.epoch_mean() == pytest.approx(softs[-1], rel=1e-6)


def test_the_soft_term_is_fp32_under_bf16_logits_and_the_teacher_is_frozen():
    student, teacher = torch.randn(4, 9), torch.randn(4, 9)
    loss = distill_loss(student.bfloat16(), teacher.bfloat16(), 2.0)
    assert loss.dtype == torch.float32
    exact = distill_loss(student.bfloat16().float(), teacher.bfloat16().float(), 2.0)
    assert float(loss) == float(exact)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5)).train()
    assert frozen(model) is model and not model.training and not model[1].training
    assert not any(p.requires_grad for p in model.parameters())


def test_hooks_build_a_frozen_dense_teacher_only_when_asked(tmp_path):
    dense, _ = trained_mlp((32,), epochs=1)
    save_model(dense, tmp_path / "w.safetensors")
    off = hooks_of(config(), tmp_path / "w.safetensors")
    assert off.batch_loss(TASK, CPU) is None  # the default: plain task loss, nothing changes
    assert "distill_loss" not in off.extra_metrics(dense, 0)
    cfg = config({"weight": 0.5, "temperature": 3.0})
    hooks = hooks_of(cfg, tmp_path / "w.safetensors")
    student = hooks.transform(TASK.build_model("mlp", hidden=[32]), TASK)
    d = hooks.batch_loss(TASK, CPU)
    assert (d.weight, d.temperature) == (0.5, 3.0)
    assert d.teacher is not student and not d.teacher.training
    assert not any(p.requires_grad for p in d.teacher.parameters())
    assert next(d.teacher.parameters()).device == CPU
    x = torch.randn(5, 64)
    torch.testing.assert_close(d.teacher(x), dense.eval()(x))  # the dense, unpruned weights
    d(student(x), x, torch.zeros(5, dtype=torch.long))
    assert hooks.extra_metrics(student, 0)["distill_loss"] > 0


def test_config_checks_name_the_key():
    with pytest.raises(ValidationError, match="distill.weight"):
        config({"weight": 1.5})
    with pytest.raises(ValidationError, match="distill.temperature"):
        config({"weight": 0.5, "temperature": 0})
    assert training_errors(config({"weight": 0.5}, epochs=0)) == [
        "finetune.distill.weight: distillation needs finetune.epochs > 0"
    ]
    assert training_errors(config(epochs=0)) == []  # off by default
    assert config().finetune.distill.weight == 0.0


def test_fine_tune_learns_from_the_teacher_when_the_labels_are_useless(tmp_path: Path):
    """Train a fresh student on shuffled labels: only the dense teacher knows the digits, so
    weight 1 reaches high accuracy and the plain task loss (weight 0) cannot."""
    dense, splits = trained_mlp((64,), epochs=8)
    save_model(dense, tmp_path / "w.safetensors")
    x, y = splits.train.tensors
    shuffled = torch.utils.data.TensorDataset(x, y[torch.randperm(len(y))])
    scores = {}
    for weight in (0.0, 1.0):
        cfg = config({"weight": weight, "temperature": 2.0}, hidden=(64,))
        hooks = hooks_of(cfg, tmp_path / "w.safetensors")
        torch.manual_seed(1)
        student = TASK.build_model("mlp", hidden=[64])
        train(student, shuffled, 3, batch_loss=hooks.batch_loss(TASK, CPU), seed=1)
        scores[weight] = accuracy(student, splits.test)
    assert accuracy(dense, splits.test) > 0.9
    assert scores[1.0] > 0.6, scores  # 0.78 measured (3 epochs), plain: 0.12
    assert scores[0.0] < 0.3, scores
