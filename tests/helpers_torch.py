"""Plain-torch helpers for the compression tests: a tiny trainer and a cached trained MLP."""

from __future__ import annotations

import copy
import functools
import statistics
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset

from accelab.measure import compare, measure
from trainables.base import Splits
from trainables.digits import TASK


def train(
    model: nn.Module,
    dataset: TensorDataset,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    after_step: Callable[[nn.Module, int], object] | None = None,
) -> nn.Module:
    """Adam on cross-entropy; ``after_step(model, step)`` runs after each optimizer step.

    Runs on one thread: on a shared 2-core machine two spinning OpenMP threads can be
    20x slower than one whenever another process holds a core.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(model, dataset, epochs, lr, batch_size, seed, after_step)
    finally:
        torch.set_num_threads(previous_threads)


def _train(model, dataset, epochs, lr, batch_size, seed, after_step) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    x_all, y_all = dataset.tensors
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(x_all), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x_all[idx]), y_all[idx]).backward()
            optimizer.step()
            step += 1
            if after_step is not None:
                after_step(model, step)
    return model.eval()


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
    baseline: nn.Module, candidate: nn.Module, test_set: TensorDataset, rounds: int = 5, **kwargs
) -> float:
    """Median over interleaved rounds of ``compare(measure(baseline), measure(candidate))``.

    Measured on one thread unless ``threads`` is given (robust on a busy shared machine).
    """
    kwargs.setdefault("threads", 1)
    speedups = []
    for _ in range(rounds):
        base = measure(baseline, test_set, backend="fp32-dense", simulated=False, **kwargs)
        cand = measure(candidate, test_set, backend="candidate", simulated=False, **kwargs)
        speedups.append(compare(base, cand)["speedup"])
    return statistics.median(speedups)
