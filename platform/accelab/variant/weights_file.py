"""A dense model from a plain weights file trained outside accelab.

A ``.safetensors`` file, a ``.pt``/``.pth`` state dict (``torch.load(weights_only=True)``),
or a directory holding ``model.safetensors`` but no ``meta.json`` (a Hugging Face
``save_pretrained`` directory). It carries no record of which model it is for, so it is
checked against the configured model (names and shapes, first mismatch named) and staged
as an accelab checkpoint whose ``meta.json`` records the config's trainable and the
source: from then on it is a dense checkpoint like any other, and nothing dense is trained.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from accelab.errors import UsageError
from accelab.training.checkpoint import (
    META_FILE,
    MODEL_FILE,
    load_model_state,
    safe_torch_load,
    save_model,
)
from accelab.variant.setup import Setup

SUFFIXES = (".safetensors", ".pt", ".pth")
# where training scripts commonly nest the state dict in a .pt file
NESTED_KEYS = ("state_dict", "model_state_dict", "model")


def plain_weights(source: str) -> Path | None:
    """The weights file ``source`` names, or None when it is an accelab checkpoint, a run
    directory or an MLflow run (those carry a ``meta.json``)."""
    if source.startswith("runs:/"):
        return None
    path = Path(source).expanduser().resolve()
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise UsageError(
                f"--from {source}: not a weights file ({', '.join(SUFFIXES)}) "
                "nor a checkpoint directory"
            )
        return path
    accelab_dir = (path / META_FILE).is_file() or any(path.glob(f"checkpoint_*/{META_FILE}"))
    if path.is_dir() and (path / MODEL_FILE).is_file() and not accelab_dir:
        return path / MODEL_FILE
    return None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors by name; a ``.pt`` file holding anything else (pickled objects) is refused."""
    if path.suffix == ".safetensors":
        return load_model_state(path)
    loaded = safe_torch_load(path)
    for key in NESTED_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise UsageError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return {str(k): v for k, v in loaded.items()}


def first_mismatch(state: Mapping[str, torch.Tensor], model: nn.Module) -> str | None:
    """The first name or shape that keeps ``state`` from loading into ``model``, in the
    model's parameter order; None when it loads."""
    want = model.state_dict()
    for name, tensor in want.items():
        if name not in state:
            return f"missing key {name}"
        if tuple(state[name].shape) != tuple(tensor.shape):
            return (
                f"size mismatch for {name}: {list(state[name].shape)} in the file, "
                f"{list(tensor.shape)} in the model"
            )
    extra = next((name for name in state if name not in want), None)
    return f"unexpected key {extra}" if extra else None


def adapt(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """What a user's file commonly differs by, and nothing else: a ``module.`` prefix
    (saved from DDP), the prefix of a wrapper around the model (e.g. ``model.`` of a
    Hugging Face adapter), and tied weights saved once (an LM head sharing the embedding)."""
    want = model.state_dict()
    if (
        state
        and all(k.startswith("module.") for k in state)
        and not any(k.startswith("module.") for k in want)
    ):
        state = {k[len("module.") :]: v for k, v in state.items()}
    prefix = common_prefix(want)
    prefixed = {prefix + k: v for k, v in state.items()}
    if prefix and len(want.keys() & prefixed.keys()) > len(want.keys() & state.keys()):
        state = prefixed
    for name, alias in tied_names(model).items():
        if name not in state and alias in state:
            state[name] = state[alias]
    return state


def common_prefix(names: Mapping[str, object]) -> str:
    """``"model."`` when every name starts with it (a wrapper holding one submodule)."""
    firsts = {name.split(".", 1)[0] for name in names}
    return f"{firsts.pop()}." if len(firsts) == 1 and all("." in n for n in names) else ""


def tied_names(model: nn.Module) -> dict[str, str]:
    """Each state-dict name whose tensor is shared with an earlier name -> that name."""
    seen: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        ptr = tensor.data_ptr()
        if ptr and ptr in seen:
            tied[name] = seen[ptr]
        else:
            seen.setdefault(ptr, name)
    return tied


def cache_key(path: Path, trainable: dict) -> str:
    digest = hashlib.sha256(json.dumps(trainable, sort_keys=True).encode())
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:24]


def stage_weights(path: Path, source: str, setup: Setup, cache_root: Path) -> Path:
    """Check ``path`` against the configured model and stage it as a checkpoint directory
    (``model.safetensors`` + ``meta.json``) under ``cache_root``, atomically."""
    trainable = setup.cfg.trainable.model_dump()
    target = cache_root / f"weights-{cache_key(path, trainable)}"
    if (target / META_FILE).is_file():
        return target
    model = setup.new_model()
    state = adapt(read_state_dict(path), model)
    if problem := first_mismatch(state, model):
        raise UsageError(f"--from {source}: does not fit the configured model ({problem})")
    model.load_state_dict(state)
    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root) as tmp:
        staged = Path(tmp, "checkpoint")
        staged.mkdir()
        save_model(model, staged / MODEL_FILE)
        meta = {"trainable": trainable, "source": str(path), "history": []}
        (staged / META_FILE).write_text(json.dumps(meta))
        try:
            staged.rename(target)  # atomic: a half-written cache entry never exists
        except OSError:  # another process staged the same file first
            if not (target / META_FILE).is_file():
                raise
    return target
