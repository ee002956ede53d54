"""A task whose splits live on disk and are read one example at a time (``RecordFile``):
the digits upscaled to 64x64 and written as fixed-size records, as large as asked for.

Its splits are in ``$ACCELAB_STREAM_DIR`` (``write_splits`` makes them). Every process that
reads them records its peak RSS growth since its first read in ``rss-<pid>.json`` there,
so a test can bound each Ray worker's memory while it trains and evaluates.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from trainables import digits
from trainables.base import Splits, Task

SIDE = 64  # 64x64 float32: 16 KiB an image
SHAPE = (1, SIDE, SIDE)
RECORD = SIDE * SIDE * 4 + 8  # image, then an int64 label
SPLIT_SHARE = {"train": 0.8, "val": 0.1, "test": 0.1}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RecordFile(Dataset):
    """Example ``i`` is read with one ``pread`` (no mmap: mapped pages would count as the
    process's memory); nothing is kept, so memory does not grow with the file."""

    def __init__(self, path: Path, rss: RssLog | None = None):
        self.path, self.rss = str(path), rss
        self.n = Path(path).stat().st_size // RECORD
        self.fd: int | None = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fd is None:  # opened lazily: a dataset may be pickled to another process
            self.fd = os.open(self.path, os.O_RDONLY)
        raw = os.pread(self.fd, RECORD, int(i) * RECORD)
        image = np.frombuffer(raw, np.float32, SIDE * SIDE).reshape(SHAPE)
        label = np.frombuffer(raw, np.int64, 1, SIDE * SIDE * 4)[0]
        if self.rss is not None:
            self.rss.sample()
        return torch.from_numpy(image.copy()), torch.tensor(int(label))

    def __getstate__(self):
        return {**self.__dict__, "fd": None}


class RssLog:
    """Peak RSS growth of this process from its first read on, sampled every 256 reads
    (what the worker set up before reading, its model, DDP and optimizer, is not data)."""

    def __init__(self, directory: Path):
        self.path = directory / f"rss-{os.getpid()}.json"
        self.base = self.peak = 0
        self.reads = 0

    def sample(self) -> None:
        self.reads += 1
        if self.reads == 1:
            self.base = self.peak = rss_bytes()
        if self.reads % 256:
            return
        self.peak = max(self.peak, rss_bytes())
        self.path.write_text(json.dumps({"growth": self.peak - self.base, "reads": self.reads}))


def write_splits(directory: Path, total_bytes: int, chunk: int = 512) -> dict[str, int]:
    """Digits images upscaled to 64x64 (nearest), with a little noise so no two records are
    equal, cycled until the splits hold ``total_bytes``; written a chunk at a time."""
    rng = np.random.default_rng(0)
    data = digits._cached_split(0)
    counts = {}
    for split, share in SPLIT_SHARE.items():
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        n = int(total_bytes * share) // RECORD
        with open(directory / f"{split}.bin", "wb") as f:
            for start in range(0, n, chunk):
                idx = np.arange(start, min(start + chunk, n)) % len(x)
                big = np.kron(x[idx], np.ones((1, 1, SIDE // 8, SIDE // 8), np.float32))
                big += rng.normal(0, 0.05, big.shape).astype(np.float32)
                rows = np.empty((len(idx), RECORD), np.uint8)
                rows[:, : SIDE * SIDE * 4] = big.reshape(len(idx), -1).view(np.uint8)
                rows[:, SIDE * SIDE * 4 :] = y[idx].astype(np.int64)[:, None].view(np.uint8)
                f.write(rows.tobytes())
        counts[split] = n
    return counts


def load_splits(seed: int = 0) -> Splits:
    # Rank 0 opens its MLflow client in a thread while the splits load (~115 MB of imports,
    # not data): imported first, so the baseline does not depend on that race.
    import mlflow.tracking  # noqa: F401

    directory = Path(os.environ["ACCELAB_STREAM_DIR"])
    rss = RssLog(directory)
    return Splits(*(RecordFile(directory / f"{s}.bin", rss) for s in SPLIT_SHARE))


def pooled_mlp(hidden: int = 64) -> nn.Module:
    """Average 8x8 blocks back to the 8x8 digit, then an MLP."""
    return nn.Sequential(nn.AvgPool2d(SIDE // 8), nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
                         nn.Linear(hidden, digits.NUM_CLASSES))  # fmt: skip


TASK = Task(
    name="streamed_digits",
    num_classes=digits.NUM_CLASSES,
    input_shape=SHAPE,
    load_splits=load_splits,
    models={"pooled_mlp": pooled_mlp},
)
