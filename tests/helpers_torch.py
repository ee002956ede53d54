"""Plain-torch helpers for the tests, built on accelab's own training loop and timing:
a cached trained MLP, accuracy, and a same-process speedup."""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn
from torch.utils.data import TensorDataset

from accelab.config.schema import MeasureConfig
from accelab.measure import TorchRunner, evaluate, speedup, time_runners
from accelab.training.epoch import fit
from trainables.base import Splits
from trainables.digits import TASK


def train(model: nn.Module, dataset: TensorDataset, epochs: int, **kwargs) -> nn.Module:
    """accelab's one training loop (``training.epoch.fit``), in this process, one thread."""
    return fit(model, dataset, epochs, loss=TASK.loss, **kwargs)


def accuracy(model: nn.Module, dataset: TensorDataset) -> float:
    return evaluate(model, dataset, TASK)


@functools.lru_cache(maxsize=4)
def _trained(hidden: tuple[int, ...], epochs: int, seed: int) -> tuple[nn.Module, Splits]:
    torch.manual_seed(seed)
    splits = TASK.load_splits(seed)
    model = TASK.build_model("mlp", hidden=list(hidden))
    return train(model, splits.train, epochs, seed=seed), splits


def trained_mlp(
    hidden: tuple[int, ...], epochs: int = 8, seed: int = 0
) -> tuple[nn.Module, Splits]:
    """A digits MLP trained in plain torch (cached per session; returns a fresh copy)."""
    model, splits = _trained(tuple(hidden), epochs, seed)
    return copy.deepcopy(model), splits


def median_speedup(
    baseline: nn.Module, candidate: nn.Module, test_set: TensorDataset, **kwargs
) -> float:
    """accelab's paired speedup as a sweep measures it (``measure.method`` blocks: short
    interleaved blocks, median of the paired block ratios), 1 thread."""
    s = MeasureConfig(**kwargs)
    runners = [TorchRunner(baseline, threads=s.threads), TorchRunner(candidate, threads=s.threads)]
    batch = test_set.tensors[0][: s.batch_size]
    base, cand = time_runners(runners, batch, s)
    return speedup(base, cand).value


def assert_int4_close(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ours: torch.Tensor):
    """``ours`` (a 4-bit model's logits on ``x``) is really quantized (not the fp32 graph),
    within 4-bit error of ``model``'s, and keeps the dense accuracy within 3 points."""
    with torch.inference_mode():
        expected = model(x)
    scale = expected.abs().max().item()
    diff = (ours - expected).abs().max().item()
    assert 0 < diff < 0.15 * scale
    accuracy = (ours.argmax(1) == y).float().mean().item()
    dense = (expected.argmax(1) == y).float().mean().item()
    assert accuracy > dense - 0.03 and dense > 0.85
