"""scikit-learn's digits as Ray Data splits: the example of a task whose data Ray Data
reads from files (here Parquet in a local cache; ``s3://`` or ``gs://`` paths read alike).

On first use the split of ``trainables.digits`` is written as Parquet files of
``ROWS_PER_FILE`` rows (column ``x``: the 64 pixels, ``y``: the digit) under
``$ACCELAB_CACHE_DIR`` (default ``~/.cache/accelab``); ``load_splits`` then returns
``ray.data.read_parquet`` datasets, read lazily: Ray Train streams each worker its shard of
the training split, evaluation and calibration read batch by batch.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainables import digits
from trainables.base import Splits, Task

ROWS_PER_FILE = 128  # several files a split: Ray Data reads (and shards) them as blocks
PIXELS = int(np.prod(digits.INPUT_SHAPE))


def cache_dir(seed: int) -> Path:
    version = importlib.metadata.version("scikit-learn")
    root = Path(os.environ.get("ACCELAB_CACHE_DIR") or Path.home() / ".cache" / "accelab")
    return root / f"digits-parquet-seed{seed}-sklearn{version}"


def write_parquet(directory: Path, x: np.ndarray, y: np.ndarray) -> None:
    """``x`` (flattened, float32, one fixed-size list per row) and ``y`` in files of
    ``ROWS_PER_FILE`` rows, named so that their order is the examples' order."""
    directory.mkdir(parents=True)
    flat = x.reshape(len(x), -1).astype(np.float32)
    for i, start in enumerate(range(0, len(x), ROWS_PER_FILE)):
        rows = slice(start, start + ROWS_PER_FILE)
        pixels = pa.FixedSizeListArray.from_arrays(pa.array(flat[rows].ravel()), PIXELS)
        table = pa.table({"x": pixels, "y": pa.array(y[rows].astype(np.int64))})
        pq.write_table(table, directory / f"part-{i:05d}.parquet")


def ensure_files(seed: int) -> Path:
    """The split's Parquet directory, written once per seed (every process that finds it
    missing writes a private copy and renames it into place: readers never see half)."""
    target = cache_dir(seed)
    if target.is_dir():
        return target
    arrays = digits._cached_split(seed)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in ("train", "val", "test"):
        write_parquet(tmp / split, arrays[f"x_{split}"], arrays[f"y_{split}"])
    try:
        tmp.rename(target)
    except OSError:  # another process renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_splits(seed: int = 0) -> Splits:
    """Lazy ``ray.data.read_parquet`` datasets of the digits split (nothing is read yet)."""
    import ray.data  # imported here: validating a config, or a torch task, needs no Ray Data

    root = ensure_files(seed)
    return Splits(*(ray.data.read_parquet(str(root / s)) for s in ("train", "val", "test")))


TASK = Task(
    name="digits_parquet",
    num_classes=digits.NUM_CLASSES,
    input_shape=(PIXELS,),
    load_splits=load_splits,
    models={"mlp": digits.build_mlp},
    ray_data=True,
    input_description=(
        "float32 (batch, 64): scikit-learn digits images flattened row by row, pixel values "
        "0-16 divided by 16 (so 0.0-1.0); output: 10 class logits (digit 0-9)"
    ),
)
