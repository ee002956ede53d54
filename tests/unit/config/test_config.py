"""Config loading, overrides and the shipped configs (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from accelab.config.loader import parse_override
from accelab.errors import ConfigError
from accelab.preflight import load_config
from tests.conftest import CONFIGS


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path):
    cfg = load_config(path)
    assert cfg.name


@pytest.mark.parametrize(
    "text, parts, value",
    [
        ("train.epochs=3", ["train", "epochs"], 3),
        ("train.lr=1e-3", ["train", "lr"], 1e-3),
        ("scaling.use_gpu=true", ["scaling", "use_gpu"], True),
        (
            "compression.prune.exclude=[fc1, fc2]",
            ["compression", "prune", "exclude"],
            ["fc1", "fc2"],
        ),
        ("tracking.uri=http://127.0.0.1:5000", ["tracking", "uri"], "http://127.0.0.1:5000"),
    ],
)
def test_overrides_are_typed(text, parts, value):
    assert parse_override(text) == (parts, value)


def test_override_changes_value_and_is_validated():
    cfg = load_config(CONFIGS / "digits.yaml", ["train.epochs=3", "scaling.num_workers=1"])
    assert (cfg.train.epochs, cfg.scaling.num_workers) == (3, 1)
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "digits.yaml", ["train.epochs=three"])
    assert "train.epochs" in str(err.value)


def test_all_errors_reported_at_once(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "train:\n  epochs: -1\n  batch_size: 0\n  colour: red\nscaling:\n  num_workers: 0\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = "\n".join(err.value.messages)
    for key in (
        "train.epochs",
        "train.batch_size",
        "train.colour: unknown key",
        "scaling.num_workers",
    ):
        assert f"{path}: {key}" in text
    assert len(err.value.messages) == 4


def test_cross_field_rules(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        load_config(
            CONFIGS / "digits.yaml",
            ["compression.quant.mode=qat", "compression.quant.bits=8", "finetune.epochs=0"],
        )
    assert "compression.quant.mode" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "digits.yaml", ["compression.prune.exclude=[nope]"])
    assert "compression.prune.exclude" in str(err.value) and "nope" in str(err.value)
