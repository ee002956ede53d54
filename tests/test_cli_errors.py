"""Bad input through the real CLI: one clear message per problem, exit code 2, no Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, run_cli

DIGITS = str(CONFIGS / "digits.yaml")
SWEEP = str(CONFIGS / "digits_sweep.yaml")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


CASES = {
    "unknown_key": (["train", DIGITS, "train.colour=red"], "train.colour: unknown key"),
    "wrong_type": (
        ["train", DIGITS, "train.epochs=many"],
        "train.epochs: Input should be a valid integer",
    ),
    "negative_epochs": (
        ["train", DIGITS, "train.epochs=-2"],
        "train.epochs: Input should be greater than or equal to 1",
    ),
    "zero_workers": (
        ["train", DIGITS, "scaling.num_workers=0"],
        "scaling.num_workers: Input should be greater than or equal to 1",
    ),
    "unknown_trainable": (
        ["train", DIGITS, "trainable.name=imagenet"],
        "trainable.name: unknown trainable 'imagenet'",
    ),
    "bad_import_path": (
        ["train", DIGITS, "trainable.name=nope.mod:TASK"],
        "trainable.name: cannot import trainable module 'nope.mod'",
    ),
    "missing_file": (["train", "does/not/exist.yaml"], "does/not/exist.yaml: no such config file"),
    "bad_override": (
        ["train", DIGITS, "train.epochs"],
        "override 'train.epochs': expected dotted.key=value",
    ),
    "too_many_workers": (
        ["train", DIGITS, "scaling.num_workers=64"],
        "scaling.num_workers: 64 workers x {CPU=1} (PACK) can never fit this machine",
    ),
    "sweep_unknown_key": (
        ["sweep", SWEEP, "sweep.space={compression.prune.sparsityy: {grid: [0.5]}}"],
        "sweep.space.compression.prune.sparsityy: value 0.5 is invalid: compression.prune.sparsityy: unknown key",
    ),
    "sweep_bad_value": (
        ["sweep", SWEEP, "sweep.space={compression.quant.bits: {grid: [8, 16]}}"],
        "sweep.space.compression.quant.bits: value 16 is invalid",
    ),
    "sweep_optuna_grid": (
        ["sweep", SWEEP, "sweep.search=optuna"],
        "grids are not supported by search=optuna",
    ),
    "sweep_without_section": (["sweep", DIGITS], "sweep: this config has no sweep section"),
    "sweep_too_many_workers": (
        ["sweep", SWEEP, "scaling.num_workers=8"],
        "scaling.num_workers: 8 workers",
    ),
    "report_unknown_experiment": (
        ["report", "no-such-experiment"],
        "report: no accelab sweep in MLflow experiment 'no-such-experiment'",
    ),
    "resume_unknown": (
        ["train", DIGITS, "run.max_failures=0", "--resume-run", "no-such-run"],
        "--resume: no unfinished MLflow record of run 'no-such-run'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_without_ray(case: str, tmp_path: Path):
    args, expected = CASES[case]
    ray_session = os.path.realpath("/tmp/ray/session_latest")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "accelab_results").exists()
    assert os.path.realpath("/tmp/ray/session_latest") == ray_session, "a Ray session was started"


def test_yaml_syntax_error_names_line(tmp_path: Path):
    path = write(tmp_path, "name: x\ntrain:\n  epochs: [1, 2\n  lr: 0.1\n")
    proc = run_cli("train", path, cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{path}:4:" in proc.stderr and "YAML syntax error" in proc.stderr


def test_validate_reports_every_file(tmp_path: Path):
    bad = write(tmp_path, "train:\n  epochs: 0\n")
    proc = run_cli("validate", DIGITS, bad, cwd=tmp_path)
    assert proc.returncode == 2
    assert f"ok: {DIGITS}" in proc.stdout
    assert f"{bad}: train.epochs" in proc.stderr


def test_help_for_every_command(tmp_path: Path):
    for command in ("train", "compress", "sweep", "report", "validate"):
        proc = run_cli(command, "--help", cwd=tmp_path)
        assert proc.returncode == 0 and "usage: accelab" in proc.stdout
