"""Hugging Face text models on the Python standard library corpus that pylm uses.

Tokens are bytes (vocabulary 256, pylm's windows of ``CONTEXT``), so any architecture
built from a config trains here offline; a model loaded from a directory must have a
vocabulary of at least 256 ids (its tokenizer is not used: the byte ids are its inputs).

``CAUSAL_LM`` is pylm's task (data, perplexity, next-byte accuracy, generation) with a
``transformers`` model. ``TEXT_CLASSIFIER`` labels each window by the file it comes from:
test code (a ``test``/``tests`` folder or a ``test_*.py`` file) or library code; files are
split by pylm's path-hash rule, so no file is in two splits.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from trainables import pylm
from trainables.base import Splits, Task
from trainables.hf.models import TokenLogits, build, transformers

# The MLP hidden units of the common families: gated (llama, mistral, qwen: both halves of
# the gate are pruned together), bert/roberta/vit ``intermediate.dense``, opt/phi ``fc1``.
MLP_UNITS = ("gate_proj", "up_proj", "intermediate.dense", "mlp.fc1")
BYTE_LEVEL = {"vocab_size": pylm.VOCAB, "max_position_embeddings": pylm.CONTEXT}


def causal_lm(config: dict | None = None, path: str | None = None) -> nn.Module:
    model = build("AutoModelForCausalLM", config, path, fixed={},
                  defaults={**BYTE_LEVEL, "tie_word_embeddings": False})  # fmt: skip
    if model.config.vocab_size < pylm.VOCAB:
        raise ValueError(f"vocab_size {model.config.vocab_size} < {pylm.VOCAB} byte ids")
    return TokenLogits(model)


CAUSAL_LM = replace(
    pylm.TASK, name="hf_causal_lm", models={"causal_lm": causal_lm}, structured_only=MLP_UNITS
)


def causal_lm_task(tokenizer: str, name: str = "hf_causal_lm_tokenized") -> Task:
    """``CAUSAL_LM`` on the same text, tokenized by the tokenizer of a local
    ``save_pretrained`` directory (``local_files_only``). A task's data cannot depend on
    ``model_args``, so a tokenizer is named in a module of your own and the config names it
    by import path: ``TASK = causal_lm_task("./my_model")``, ``trainable.name: mytask:TASK``."""
    directory = str(Path(tokenizer).expanduser().resolve())

    @functools.lru_cache(maxsize=1)
    def windows() -> tuple[dict[str, np.ndarray], dict]:
        tok = transformers().AutoTokenizer.from_pretrained(directory, local_files_only=True)
        chunks, _, files = pylm.corpus()
        arrays, digest = {}, hashlib.sha256()
        for split, parts in chunks.items():
            text = b"".join(parts).decode("utf-8", errors="replace")
            ids = np.asarray(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
            n = (len(ids) - 1) // pylm.CONTEXT
            w = np.lib.stride_tricks.sliding_window_view(ids, pylm.CONTEXT + 1)[:: pylm.CONTEXT][:n]
            arrays[f"x_{split}"], arrays[f"y_{split}"] = w[:, :-1].copy(), w[:, 1:].copy()
            digest.update(ids.tobytes())
        description = {**pylm.describe_data(), "tokenizer": directory, "vocab": len(tok),
                       "files": files, "sha256": digest.hexdigest(),
                       "sequences": {s: int(len(arrays[f"x_{s}"])) for s in chunks}}  # fmt: skip
        return arrays, description

    def load_splits(seed: int = 0) -> Splits:
        a = windows()[0]
        return Splits(*(TensorDataset(torch.from_numpy(a[f"x_{s}"]), torch.from_numpy(a[f"y_{s}"]))
                        for s in ("train", "val", "test")))  # fmt: skip

    def model(config: dict | None = None, path: str | None = None) -> nn.Module:
        vocab = windows()[1]["vocab"]
        built = build("AutoModelForCausalLM", config, path, fixed={},
                      defaults={**BYTE_LEVEL, "vocab_size": vocab, "tie_word_embeddings": False})  # fmt: skip
        if built.config.vocab_size < vocab:
            raise ValueError(f"vocab_size {built.config.vocab_size} < the tokenizer's {vocab}")
        return TokenLogits(built)

    return replace(CAUSAL_LM, name=name, load_splits=load_splits, models={"causal_lm": model},
                   describe_data=lambda seed=0: windows()[1],
                   secondary={"next_token_accuracy": pylm.next_byte_accuracy})  # fmt: skip


CLASSES = ("library", "test")
CLASSIFIER_BYTES = {"train": 600_000, "val": 80_000, "test": 80_000}


def is_test_code(relative: str) -> bool:
    *folders, name = relative.split("/")
    return name.startswith("test_") or any(f in ("test", "tests", "idle_test") for f in folders)


@functools.lru_cache(maxsize=2)
def _windows(context: int) -> tuple[dict[str, np.ndarray], dict]:
    """Windows and labels per split; files are taken in path-hash order, so every split
    mixes test and library code (alphabetical order would reach ``test/`` last)."""
    files = sorted(pylm.stdlib_files(), key=lambda f: hashlib.sha256(f[0].encode()).hexdigest())
    xs: dict[str, list[np.ndarray]] = {s: [] for s in CLASSIFIER_BYTES}
    ys: dict[str, list[int]] = {s: [] for s in CLASSIFIER_BYTES}
    digest = hashlib.sha256()
    for relative, path in files:
        split = pylm.split_of(relative)
        if len(ys[split]) * context >= CLASSIFIER_BYTES[split]:
            continue
        data = path.read_bytes()[: pylm.FILE_BYTES]
        n = len(data) // context
        if n:
            xs[split].append(np.frombuffer(data[: n * context], np.uint8).reshape(n, context))
            ys[split] += [int(is_test_code(relative))] * n
            digest.update(relative.encode() + data[: n * context])
    arrays = {}
    for s in CLASSIFIER_BYTES:
        arrays[f"x_{s}"] = np.concatenate(xs[s]).astype(np.int64)
        arrays[f"y_{s}"] = np.asarray(ys[s], dtype=np.int64)
    description = {
        "corpus": "CPython standard library source (.py), byte tokens, test vs library code",
        "classes": list(CLASSES),
        "sequences": {s: int(len(arrays[f"y_{s}"])) for s in CLASSIFIER_BYTES},
        "test_code": {s: int(arrays[f"y_{s}"].sum()) for s in CLASSIFIER_BYTES},
        "context": context,
        "sha256": digest.hexdigest(),
    }
    return arrays, description


def classifier_splits(seed: int = 0) -> Splits:
    """(``seed`` is unused: the split is by file path, like pylm's.)"""
    a, _ = _windows(pylm.CONTEXT)

    def dataset(split: str) -> TensorDataset:
        return TensorDataset(torch.from_numpy(a[f"x_{split}"]), torch.from_numpy(a[f"y_{split}"]))

    return Splits(dataset("train"), dataset("val"), dataset("test"))


def sequence_classifier(config: dict | None = None, path: str | None = None) -> nn.Module:
    # pad id 0: a NUL byte, never in source code (a classifier finds the last non-pad token)
    model = build("AutoModelForSequenceClassification", config, path,
                  fixed={"num_labels": len(CLASSES)}, defaults={**BYTE_LEVEL, "pad_token_id": 0})  # fmt: skip
    return TokenLogits(model)


TEXT_CLASSIFIER = Task(
    name="hf_text_classifier",
    num_classes=len(CLASSES),
    input_shape=(pylm.CONTEXT,),
    load_splits=classifier_splits,
    models={"sequence_classifier": sequence_classifier},
    input_dtype=torch.int64,
    describe_data=lambda seed=0: _windows(pylm.CONTEXT)[1],
    structured_only=MLP_UNITS,
)
