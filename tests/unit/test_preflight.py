"""Checks made before Ray starts (#17): registry names and aliases as MLflow judges them,
the run name a plain name, the storage path writable, environment knobs parsed, and
overrides under ``sweep.space`` whose keys are dotted config names."""

from __future__ import annotations

import os

import pytest

from accelab.config.loader import apply_overrides, config_path
from accelab.config.schema import ExperimentConfig
from accelab.errors import UsageError
from accelab.preflight import check_storage_path, registry_errors, run_name_errors
from accelab.tasks import import_timeout_s

SWEEP = {"sweep": {"variants": [{"compression.prune.method": "none"}]}}


def config(**sections) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"name": "exp", **SWEEP, **sections})


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ({"alias": "fastest-within-1pt"}, []),
        ({"alias": "bad alias!"}, ["registry.alias: Invalid alias name: 'bad alias!'"]),
        (
            {"alias": "Latest"},
            ["registry.alias: 'latest' alias name (case insensitive) is reserved"],
        ),
        ({"alias": "v2"}, ["registry.alias: Version alias name 'v2' is reserved"]),
        ({"model_name": "team/model"}, ["registry.model_name: Invalid model name 'team/model'"]),
        ({"model_name": "a:b", "enabled": False}, []),  # nothing is registered: nothing to check
        ({"target": "ort_b1"}, []),  # the default targets: torch_b64, ort_b64, ort_b1
        (
            {"target": "ov_b64"},
            [
                "registry.target: 'ov_b64' is not a measured target; measure.targets are "
                "torch_b64, ort_b64, ort_b1"
            ],
        ),  # fmt: skip
    ],
)
def test_registry_names_are_judged_by_mlflow_rules_before_the_sweep(registry, expected):
    problems = registry_errors(config(registry=registry))
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problem


def test_the_default_model_name_is_the_experiment_name_and_is_checked_as_such():
    [problem] = registry_errors(ExperimentConfig.model_validate({"name": "a:b", **SWEEP}))
    assert problem.startswith("name: Invalid model name 'a:b'")
    assert "set registry.model_name" in problem
    assert registry_errors(ExperimentConfig.model_validate({"name": "a:b"})) == []  # no sweep


@pytest.mark.parametrize(
    ("run", "name", "bad_key"),
    [
        ({"name": "../../escape/x"}, "exp", "run.name"),
        ({"name": ".."}, "exp", "run.name"),
        ({"name": "a\\b"}, "exp", "run.name"),
        ({}, "team/exp", "name"),  # the run name defaults to the experiment's
        ({"name": "ok-run_1.2"}, "team/exp", None),
        ({}, "..exp", None),  # not a path step
    ],
)
def test_the_run_name_is_a_plain_name(run, name, bad_key):
    cfg = ExperimentConfig.model_validate({"name": name, "run": run})
    problems = run_name_errors(cfg)
    assert [p.split(":")[0] for p in problems] == ([bad_key] if bad_key else [])


def test_storage_path_must_be_a_writable_directory_and_nothing_is_created(tmp_path):
    def check(path: str) -> None:
        check_storage_path(config(run={"storage_path": path}))

    check(str(tmp_path))  # exists
    check(str(tmp_path / "new" / "deeper"))  # created later, under a writable folder
    check("s3://bucket/results")  # the cluster's to check
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"run.storage_path: .*/file is not a directory"):
        check(str(tmp_path / "file"))
    with pytest.raises(UsageError, match=r"/file/sub is under .*/file, which is not a directory"):
        check(str(tmp_path / "file" / "sub"))
    assert sorted(os.listdir(tmp_path)) == ["file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere (the CLI table drops it)")
def test_a_read_only_storage_parent_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(UsageError, match="is not writable by this user"):
        check_storage_path(config(run={"storage_path": str(ro / "results")}))


@pytest.mark.parametrize(
    ("raw", "ok"), [("", 60.0), ("5", 5.0), ("0.5", 0.5), ("abc", None), ("0", None),
                    ("-3", None), ("inf", None), ("nan", None)],
)  # fmt: skip
def test_import_timeout_is_parsed_or_refused(monkeypatch, raw, ok):
    monkeypatch.setenv("ACCELAB_IMPORT_TIMEOUT", raw)
    if ok is None:
        with pytest.raises(UsageError, match="ACCELAB_IMPORT_TIMEOUT: .* is not a positive number"):
            import_timeout_s()
    else:
        assert import_timeout_s() == ok


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("sweep.space.compression.quant.bits", ["sweep", "space", "compression.quant.bits"]),
        ("sweep.space.compression.quant.bits.grid",
         ["sweep", "space", "compression.quant.bits", "grid"]),
        ("sweep.space.train.lr.loguniform", ["sweep", "space", "train.lr", "loguniform"]),
        ("sweep.space.lr", ["sweep", "space", "lr"]),
        ("sweep.num_samples", ["sweep", "num_samples"]),
        ("compression.quant.bits", ["compression", "quant", "bits"]),
    ],
)  # fmt: skip
def test_keys_under_sweep_space_are_dotted_names(key, path):
    assert config_path(key.split(".")) == path


def test_a_space_override_sets_the_entry_the_file_would():
    data, _ = apply_overrides({"sweep": {"space": {}}},
                              ["sweep.space.compression.quant.bits={grid: [32, 8]}",
                               "sweep.space.train.lr.uniform=[0.001, 0.01]"])  # fmt: skip
    assert data["sweep"]["space"] == {
        "compression.quant.bits": {"grid": [32, 8]},
        "train.lr": {"uniform": [0.001, 0.01]},
    }
