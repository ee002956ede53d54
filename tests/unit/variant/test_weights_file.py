"""``--from`` a plain weights file trained outside accelab: read (.safetensors, .pt/.pth
with ``weights_only``), checked against the configured model with the first mismatch named,
and staged as a checkpoint whose ``meta.json`` records the config's trainable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from accelab.config.schema import ExperimentConfig
from accelab.errors import UsageError
from accelab.training.checkpoint import META_FILE, MODEL_FILE, load_model_state
from accelab.variant.setup import Setup
from accelab.variant.sources import check_same_trainable, prepare_source
from accelab.variant.weights_file import first_mismatch, plain_weights
from trainables.digits import TASK

HIDDEN = [32]


def config(tmp_path: Path, hidden=HIDDEN) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": hidden}},
            "run": {"storage_path": str(tmp_path / "results")},
        }  # fmt: skip
    )


def mlp(hidden=HIDDEN):
    torch.manual_seed(0)
    return TASK.build_model("mlp", hidden=hidden)


def state_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "name, write",
    [
        ("w.safetensors", lambda s, p: save_file(s, str(p))),
        ("w.pt", lambda s, p: torch.save(s, p)),
        ("w.pth", lambda s, p: torch.save({"state_dict": s, "epoch": 3}, p)),  # nested
        ("ddp.pt", lambda s, p: torch.save({f"module.{k}": v for k, v in s.items()}, p)),
    ],
)
def test_a_weights_file_is_staged_as_a_checkpoint_of_the_configured_model(tmp_path, name, write):
    model = mlp()
    write(state_of(model), tmp_path / name)
    cfg = config(tmp_path)
    dense = prepare_source(Setup.of(cfg), str(tmp_path / name), tracking_uri="")
    assert dense.parent == tmp_path / "results" / "baselines"
    meta = json.loads((dense / META_FILE).read_text())
    assert meta["trainable"] == cfg.trainable.model_dump()
    assert meta["source"] == str((tmp_path / name).resolve())
    check_same_trainable(dense, cfg)  # what a sweep's trials check again
    staged = load_model_state(dense / MODEL_FILE)
    for key, tensor in model.state_dict().items():
        assert torch.equal(staged[key], tensor), key
    # the same file and config again: the staged copy is reused, not written twice
    assert prepare_source(Setup.of(cfg), str(tmp_path / name), tracking_uri="") == dense
    assert len(list(dense.parent.iterdir())) == 1


def test_a_save_pretrained_style_directory_is_a_weights_file(tmp_path):
    save_file(state_of(mlp()), str(tmp_path / MODEL_FILE))  # no meta.json next to it
    assert plain_weights(str(tmp_path)) == (tmp_path / MODEL_FILE).resolve()
    (tmp_path / META_FILE).write_text("{}")  # an accelab checkpoint is not
    assert plain_weights(str(tmp_path)) is None


def mismatched(kind: str) -> dict[str, torch.Tensor]:
    state = state_of(mlp())
    if kind == "missing":
        del state["3.bias"]
    elif kind == "unexpected":
        state["head.weight"] = torch.zeros(2)
    elif kind == "shape":
        state = state_of(mlp([64]))
    return state


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "(missing key 3.bias)"),
        ("unexpected", "(unexpected key head.weight)"),
        ("shape", "(size mismatch for 1.weight: [64, 64] in the file, [32, 64] in the model)"),
    ],
)
def test_a_file_that_does_not_fit_names_the_first_mismatch_and_stages_nothing(
    tmp_path, kind, message
):
    save_file(mismatched(kind), str(tmp_path / "w.safetensors"))
    with pytest.raises(UsageError) as err:
        prepare_source(Setup.of(config(tmp_path)), str(tmp_path / "w.safetensors"), tracking_uri="")
    text = str(err.value)
    assert text.startswith(f"--from {tmp_path / 'w.safetensors'}: does not fit the configured")
    assert text.endswith(message), text
    assert not any((tmp_path / "results" / "baselines").glob("weights-*"))


def test_first_mismatch_is_none_when_every_name_and_shape_fits():
    assert first_mismatch(state_of(mlp()), mlp()) is None


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "w.pt",
            lambda p: torch.save({"w": torch.zeros(1), "cfg": Path("x")}, p),
            "refused to load",
        ),
        ("w.pt", lambda p: torch.save([torch.zeros(1)], p), "not a state dict"),
        ("w.safetensors", lambda p: p.write_bytes(b"junk"), "not a readable safetensors file"),
        ("w.ckpt", lambda p: p.write_bytes(b""), "not a weights file (.safetensors, .pt, .pth)"),
    ],
)
def test_unreadable_or_unknown_files_are_refused(tmp_path, name, content, message):
    content(tmp_path / name)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare_source(Setup.of(config(tmp_path)), str(tmp_path / name), tracking_uri="")
