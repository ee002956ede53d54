"""scikit-learn's bundled 8x8 handwritten digits (1,797 real images, offline).

Models: the article's ``SimpleModel`` (conv 3x3 -> 32 channels, fc 512, fc 10) adapted
to 1x8x8 input (``cnn``), and a Linear-heavy ``mlp`` whose cost is dominated by matmuls,
the case where pruning and int8 kernels pay off on a CPU.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from trainables.base import Splits, Task

NUM_CLASSES = 10
INPUT_SHAPE = (1, 8, 8)


def _split(seed: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits  # imported here: validating a config needs no data
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x.astype(np.float32) / 16.0).reshape(-1, *INPUT_SHAPE)
    y = y.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.30, random_state=seed, stratify=y
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.50, random_state=seed, stratify=y_rest
    )
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val,
            "x_test": x_test, "y_test": y_test}  # fmt: skip


def _cached_split(seed: int) -> dict[str, np.ndarray]:
    """The split, computed once per seed and scikit-learn version and cached as .npz
    (importing scikit-learn costs ~2 s in every new Ray worker)."""
    version = importlib.metadata.version("scikit-learn")
    root = Path(os.environ.get("ACCELAB_CACHE_DIR") or Path.home() / ".cache" / "accelab")
    path = root / f"digits-split-seed{seed}-sklearn{version}.npz"
    with contextlib.suppress(OSError, ValueError, KeyError), np.load(path) as cached:
        return {k: cached[k] for k in cached.files}
    arrays = _split(seed)
    with contextlib.suppress(OSError):
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)  # atomic: concurrent workers never read half a file
    return arrays


def load_splits(seed: int = 0) -> Splits:
    """Stratified 70/15/15 split with a fixed seed; pixels scaled to [0, 1]."""
    a = _cached_split(seed)

    def dataset(split: str) -> TensorDataset:
        return TensorDataset(torch.from_numpy(a[f"x_{split}"]), torch.from_numpy(a[f"y_{split}"]))

    return Splits(dataset("train"), dataset("val"), dataset("test"))


class SimpleModel(nn.Module):
    """The article's SimpleModel: conv 3x3 -> 32 channels, fc 512, fc 10 (on 1x8x8)."""

    def __init__(self, channels: int = 32, hidden: int = 512, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(channels * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv(x)))
        x = torch.flatten(x, 1)
        return self.fc2(self.relu(self.fc1(x)))


def build_mlp(
    hidden: tuple[int, ...] | list[int] = (512, 512), num_classes: int = NUM_CLASSES
) -> nn.Module:
    """Flatten -> [Linear -> ReLU] * len(hidden) -> Linear(num_classes)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(np.prod(INPUT_SHAPE))
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


TASK = Task(
    name="digits",
    num_classes=NUM_CLASSES,
    input_shape=INPUT_SHAPE,
    load_splits=load_splits,
    models={"cnn": SimpleModel, "mlp": build_mlp},
    input_description=(
        "float32 (batch, 1, 8, 8): scikit-learn digits images, pixel values 0-16 divided by "
        "16 (so 0.0-1.0); output: 10 class logits (digit 0-9)"
    ),
)
