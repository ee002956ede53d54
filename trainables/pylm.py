"""A byte-level language model of Python source code: the running interpreter's own
standard library (``sysconfig``'s stdlib folder, ~1,800 files and ~30 MB of real code on
CPython 3.11), available offline and deterministic for a given Python.

Files are split by a fixed rule: the SHA-256 of a file's path relative to the stdlib root
puts it in train (80%), validation (10%) or test (10%), so no file is in two splits.
Tokens are bytes (vocabulary 256); sequences are non-overlapping windows of ``context``
tokens with next-byte targets. ``describe_data`` records exactly what the corpus was.

The model is nanoGPT-shaped: token and position embeddings, ``n_layer`` pre-norm blocks of
causal self-attention (separate q/k/v/o projections) and an MLP, a final layer norm and an
untied output head. Quality is perplexity on held-out files (lower is better), from each
sequence's mean next-byte loss; next-byte accuracy is reported next to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from trainables.base import Metric, Splits, Task

VOCAB = 256
CONTEXT = 128
SPLIT_BYTES = {
    "train": 3_000_000,
    "val": 160_000,
    "test": 160_000,
}  # how much of each split is used
FILE_BYTES = 8_192  # at most this much of one file: every split draws on many files


def stdlib_files() -> list[tuple[str, Path]]:
    """(relative path, path) of every .py file of the interpreter's standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if "site-packages" not in p.parts and p.is_file()]
    return sorted((p.relative_to(root).as_posix(), p) for p in files)


def split_of(relative: str) -> str:
    bucket = int(hashlib.sha256(relative.encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 80 else ("val" if bucket < 90 else "test")


def corpus() -> tuple[dict[str, list[bytes]], dict[str, int], dict[str, int]]:
    """Per split: the file chunks, the bytes used and the number of files (another
    tokenizer reads the same text: ``trainables.hf.text.causal_lm_task``)."""
    chunks: dict[str, list[bytes]] = {"train": [], "val": [], "test": []}
    used = dict.fromkeys(chunks, 0)
    files = dict.fromkeys(chunks, 0)
    for relative, path in stdlib_files():
        split = split_of(relative)
        if used[split] >= SPLIT_BYTES[split]:
            continue
        data = path.read_bytes()[: min(FILE_BYTES, SPLIT_BYTES[split] - used[split])]
        chunks[split].append(data + b"\n")
        used[split] += len(data) + 1
        files[split] += 1
    return chunks, used, files


def _build() -> tuple[dict[str, np.ndarray], dict]:
    """Per split, its byte tokens; and the corpus description (what a run was trained on)."""
    chunks, used, files = corpus()
    tokens, digest = {}, hashlib.sha256()
    for split, parts in chunks.items():
        tokens[split] = np.frombuffer(b"".join(parts), dtype=np.uint8)
        digest.update(tokens[split].tobytes())
    description = {
        "corpus": "CPython standard library source (.py), byte tokens",
        "python": sys.version.split()[0],
        "stdlib": sysconfig.get_paths()["stdlib"],
        "files": files,
        "bytes": used,
        "sequences": {s: windows(len(t), CONTEXT) for s, t in tokens.items()},
        "context": CONTEXT,
        "sha256": digest.hexdigest(),
    }
    return tokens, description


def windows(tokens: int, context: int) -> int:
    """How many non-overlapping windows of ``context`` tokens (+1 target) ``tokens`` hold."""
    return (tokens - 1) // context


def _cached() -> Path:
    """The corpus directory: ``<split>.npy`` byte tokens and ``description.json``, built once
    per Python version (reading and hashing 30 MB of files in every Ray worker would cost
    seconds), written to a private directory and renamed into place."""
    root = Path(os.environ.get("ACCELAB_CACHE_DIR") or Path.home() / ".cache" / "accelab")
    key = f"pylm-{sys.version.split()[0]}-{sum(SPLIT_BYTES.values())}-{FILE_BYTES}"
    path = root / key
    if (path / "description.json").is_file():
        return path
    tokens, description = _build()
    tmp = root / f"{key}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for split, t in tokens.items():
        np.save(tmp / f"{split}.npy", t)
    (tmp / "description.json").write_text(json.dumps(description))
    try:
        tmp.rename(path)
    except OSError:  # another process renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)
    return path


class Windows(Dataset):
    """Window ``i`` of a split's token file: tokens ``[i*context, (i+1)*context]``, the
    input all but the last, the target all but the first. The file is memory-mapped
    (opened on first read, so the dataset pickles as a path): a worker holds only the
    pages it reads, never the corpus."""

    def __init__(self, path: Path, context: int = CONTEXT):
        self.path, self.context = Path(path), context
        self.tokens: np.ndarray | None = None
        self.n = windows(self._open().shape[0], context)

    def _open(self) -> np.ndarray:
        if self.tokens is None:
            self.tokens = np.load(self.path, mmap_mode="r")
        return self.tokens

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(f"window {i} of {self.n}")
        start = int(i) * self.context
        w = torch.from_numpy(self._open()[start : start + self.context + 1].astype(np.int64))
        return w[:-1], w[1:]

    def __getstate__(self):
        return {**self.__dict__, "tokens": None}


def load_splits(seed: int = 0) -> Splits:
    """Train/validation/test windows, read lazily from the cached token files (``seed`` is
    unused: the split is by file path)."""
    root = _cached()
    return Splits(*(Windows(root / f"{split}.npy") for split in ("train", "val", "test")))


def describe_data(seed: int = 0) -> dict:
    return json.loads((_cached() / "description.json").read_text())


class Attention(nn.Module):
    """Causal self-attention with separate q/k/v/o projections (prunable, quantizable)."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model {d_model} is not divisible by n_head {n_head}")
        self.head_dim = d_model // n_head
        self.q, self.k, self.v = (nn.Linear(d_model, d_model) for _ in range(3))
        self.o = nn.Linear(d_model, d_model)

    @property
    def n_head(self) -> int:
        """Read off q's width: head pruning (``accelab.compress.heads``) narrows q/k/v/o, and
        a model rebuilt with the pruned layer shapes then has the right head count."""
        return self.q.out_features // self.head_dim

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape

        def heads(y: Tensor) -> Tensor:
            return y.reshape(b, t, -1, self.head_dim).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)),
                                           is_causal=True)  # fmt: skip
        return self.o(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, hidden), nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, mlp_ratio: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_head)
        self.mlp = MLP(d_model, mlp_ratio * d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer over bytes: (batch, time) token ids -> (batch, time, 256)."""

    def __init__(self, n_layer: int = 2, n_head: int = 4, d_model: int = 128, mlp_ratio: int = 4,
                 context: int = CONTEXT):  # fmt: skip
        super().__init__()
        if min(n_layer, n_head, d_model, mlp_ratio, context) < 1:
            raise ValueError("n_layer, n_head, d_model, mlp_ratio and context must be >= 1")
        self.tok = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*(Block(d_model, n_head, mlp_ratio) for _ in range(n_layer)))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: Tensor) -> Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(positions)
        return self.head(self.ln(self.blocks(x)))


def sequence_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Each sequence's mean next-byte cross-entropy (nats): perplexity's per-example value."""
    return F.cross_entropy(logits.transpose(1, 2).float(), y, reduction="none").mean(dim=1)


def next_byte_accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.argmax(dim=-1) == y).float().mean(dim=1)


TASK = Task(
    name="pylm",
    num_classes=VOCAB,
    input_shape=(CONTEXT,),
    load_splits=load_splits,
    models={"gpt": GPT},
    metric=Metric("perplexity", higher_is_better=False, kind="mean", transform="exp", unit="ratio"),
    per_example=sequence_loss,
    input_dtype=torch.int64,
    describe_data=describe_data,
    secondary={"next_byte_accuracy": next_byte_accuracy},
    generates=True,
    structured_only=("fc1",),
    input_description=(
        f"int64 (batch, {CONTEXT}): UTF-8 bytes of Python source as ids 0-255 (no tokenizer); "
        f"output: next-byte logits (batch, {CONTEXT}, {VOCAB})"
    ),
)
