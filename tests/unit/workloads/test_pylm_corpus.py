"""pylm reads its corpus lazily: each split is a byte-token file memory-mapped behind a
map-style dataset, so a worker holds only the pages it reads; the windows are the
non-overlapping ``context + 1`` slices the in-memory arrays used to hold."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from trainables import pylm


def test_each_split_is_a_memory_mapped_token_file_read_window_by_window():
    splits = pylm.load_splits(0)
    for split in (splits.train, splits.val, splits.test):
        assert isinstance(split, pylm.Windows)
        assert isinstance(split.tokens, np.memmap) and split.tokens.dtype == np.uint8
        assert split.tokens.mode == "r"  # not a copy in memory
    train = splits.train
    tokens = np.load(train.path)  # the whole file, only to compare against
    assert len(train) == (len(tokens) - 1) // pylm.CONTEXT > 20_000
    for i in (0, 1, 777, len(train) - 1):
        x, y = train[i]
        start = i * pylm.CONTEXT
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (pylm.CONTEXT,)
        assert x.tolist() == tokens[start : start + pylm.CONTEXT].tolist()
        assert y.tolist() == tokens[start + 1 : start + pylm.CONTEXT + 1].tolist()
    # pickled to a Ray worker or DataLoader process as a path, mapped there on first read
    copy = pickle.loads(pickle.dumps(train))
    assert copy.tokens is None and torch.equal(copy[5][0], train[5][0])
    assert pylm.describe_data(0)["sequences"] == {
        "train": len(train), "val": len(splits.val), "test": len(splits.test)
    }  # fmt: skip
