"""Tasks made for tests: models whose cost and behaviour the tests control.

- ``COST``: digits with a model doing ``k`` 256x256 matmuls per forward pass, so latency
  grows with ``k`` and a swapped or mis-threaded timing is visible.
- ``PROBE``: digits with a model that records the intra-op thread count it runs under.
- ``SHIFTED_VAL``: digits whose validation labels are shifted by one class: any model
  scores ~0 on validation and well on test, so a number computed on the wrong split shows.
- ``SCALED``: digits whose validation and test inputs are 8x the training inputs: a
  quantizer calibrated on anything but training data gets an 8x wider input range.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from trainables.base import Splits, Task
from trainables.digits import INPUT_SHAPE, NUM_CLASSES, build_mlp, load_splits

THREADS_SEEN: list[int] = []


class Matmuls(nn.Module):
    def __init__(self, k: int = 1, width: int = 256):
        super().__init__()
        self.k = k
        self.inp = nn.Linear(64, width)
        self.weight = nn.Parameter(torch.randn(width, width) / width**0.5)
        self.out = nn.Linear(width, NUM_CLASSES)

    def forward(self, x):
        h = self.inp(x.flatten(1))
        for _ in range(self.k):
            h = torch.tanh(h @ self.weight)
        return self.out(h)


class ThreadRecorder(nn.Module):
    def forward(self, x):
        THREADS_SEEN.append(torch.get_num_threads())
        return x


def build_probe(hidden: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, hidden), ThreadRecorder(), nn.ReLU(), nn.Linear(hidden, 10)
    )


def shifted_val_splits(seed: int = 0) -> Splits:
    s = load_splits(seed)
    x, y = s.val.tensors
    return Splits(s.train, TensorDataset(x, (y + 1) % NUM_CLASSES), s.test)


def scaled_splits(seed: int = 0) -> Splits:
    s = load_splits(seed)

    def scaled(d: TensorDataset) -> TensorDataset:
        return TensorDataset(d.tensors[0] * 8, d.tensors[1])

    return Splits(s.train, scaled(s.val), scaled(s.test))


COST = Task("cost", NUM_CLASSES, INPUT_SHAPE, load_splits, {"cost": Matmuls})
PROBE = Task("probe", NUM_CLASSES, INPUT_SHAPE, load_splits, {"probe": build_probe})
SHIFTED_VAL = Task("shifted", NUM_CLASSES, INPUT_SHAPE, shifted_val_splits, {"mlp": build_mlp})
SCALED = Task("scaled", NUM_CLASSES, INPUT_SHAPE, scaled_splits, {"mlp": build_mlp})
