"""Checkpoint files: the model inside a wrapper is what is saved, tied weights survive a
round trip, nested directories are created, and every unreadable file is named with why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from accelab.errors import UsageError
from accelab.training.checkpoint import (
    load_model_state,
    read_meta,
    safe_torch_load,
    save_checkpoint,
    save_model,
    unwrap,
)


class Tied(nn.Module):
    """An LM head tied to its embedding: one tensor under two names."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight


def test_unwrap_takes_the_module_out_of_its_wrapper():
    model = nn.Linear(2, 2)
    assert unwrap(nn.DataParallel(model)) is model
    assert unwrap(model) is model


def test_tied_weights_are_saved_under_both_names(tmp_path: Path):
    model = Tied()
    save_model(nn.DataParallel(model), tmp_path / "m.safetensors")  # the wrapper is unwrapped
    state = load_model_state(tmp_path / "m.safetensors")
    assert set(state) == {"embed.weight", "head.weight"}
    assert torch.equal(state["embed.weight"], model.embed.weight.detach())
    assert torch.equal(state["head.weight"], model.embed.weight.detach())


def test_a_checkpoint_creates_its_nested_directory(tmp_path: Path):
    directory = tmp_path / "a" / "b" / "c"
    save_checkpoint(directory, nn.Linear(2, 2), {"loop": {"epoch": 0}}, {"epoch": 0})
    assert read_meta(directory) == {"epoch": 0}
    assert safe_torch_load(directory / "train_state.pt") == {"loop": {"epoch": 0}}


def test_every_unreadable_file_is_named_with_why(tmp_path: Path):
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(UsageError, match=f"^{missing}: model weights not found$"):
        load_model_state(missing)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(UsageError, match=rf"^{bad}: not a readable safetensors file \(.+\)$"):
        load_model_state(bad)
    with pytest.raises(UsageError, match=f"^{tmp_path / 'x.pt'}: checkpoint file not found$"):
        safe_torch_load(tmp_path / "x.pt")
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(UsageError, match=r"meta.json: not valid JSON \(.+\)$"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps([1, 2]))
    with pytest.raises(UsageError, match="meta.json: expected a JSON object, got list$"):
        read_meta(tmp_path)


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickled_object_is_refused_with_torchs_reason(tmp_path: Path):
    torch.save({"x": Payload()}, tmp_path / "s.pt")
    with pytest.raises(UsageError) as e:
        safe_torch_load(tmp_path / "s.pt")
    reason = str(e.value).split("not only tensors (", 1)[1]
    assert reason.startswith("Weights only load failed"), reason  # torch's first line
