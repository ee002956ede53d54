"""Tensors-only checkpoints: model weights as safetensors, training state via
``torch.save`` and loaded back with ``torch.load(weights_only=True)`` only.

A checkpoint directory holds:
    model.safetensors   model state_dict (unwrapped from DDP)
    train_state.pt      optimizer, GradScaler, RNG states, epoch, step (tensors + primitives)
    meta.json           epoch, metric history, trainable/model identity
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from accelab.errors import UsageError

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (``prepare_model`` wraps only when world size > 1)."""
    return model.module if hasattr(model, "module") else model


def save_model(model: nn.Module, path: Path) -> None:
    """A tensor shared by two names (an LM head tied to its embedding) is stored once per
    name: safetensors refuses aliases, and loading both back into the tied model writes the
    same values twice."""
    state, storages = {}, set()
    for k, v in unwrap(model).state_dict().items():
        t = v.detach().contiguous().cpu()
        if t.untyped_storage().data_ptr() in storages:
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        state[k] = t
    save_file(state, str(path))


def load_model_state(path: Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise UsageError(f"{path}: model weights not found")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated/bad files
        raise UsageError(f"{path}: not a readable safetensors file ({exc})") from None


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def save_checkpoint(
    directory: Path, model: nn.Module, train_state: dict[str, Any], meta: dict[str, Any]
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, directory / MODEL_FILE)
    torch.save(train_state, directory / STATE_FILE)
    (directory / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))


def safe_torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a file carrying pickled objects is refused."""
    if not Path(path).is_file():
        raise UsageError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UsageError(
            f"{path}: refused to load: it contains pickled objects, not only tensors ({first})"
        ) from None


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise UsageError(f"{directory}: not an accelab checkpoint (no {META_FILE})")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise UsageError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def load_checkpoint(
    directory: Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Return (model_state, train_state, meta) from a checkpoint directory."""
    directory = Path(directory)
    meta = read_meta(directory)
    return load_model_state(directory / MODEL_FILE), safe_torch_load(directory / STATE_FILE), meta


def epochs_left(state: dict[str, Any], epochs: int) -> range:
    """The epochs a (possibly resumed) loop still runs: those after the last finished one
    (``state["epoch"]``, -1 on a fresh start), so a restart neither repeats nor skips one."""
    return range(state["epoch"] + 1, epochs)
