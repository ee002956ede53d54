"""The registry alias moves to a new version only when it is faster than the version
holding it by more than the noise floor on the same target (a real sqlite registry and
real MLflow Models; no Ray)."""

from __future__ import annotations

import itertools

import pytest
from mlflow.tracking import MlflowClient

from accelab.config.schema import ExperimentConfig
from accelab.export.onnx import to_onnx
from accelab.review.registry import SPEEDUP_TAG, TARGET_TAG, alias_of, decide, register
from accelab.sweep.pareto import Constraints
from accelab.sweep.summary import MetricInfo, SweepSummary, TrialRow
from accelab.tracking.models import log_onnx_model
from tests.helpers_torch import trained_mlp
from trainables.digits import TASK

ALIAS = "fastest"
NAMES = (f"digits-model-{i}" for i in itertools.count())


def summary(speedup: float, noise: float, run_id: str = "", target="torch_b64") -> SweepSummary:
    row = TrialRow("t1", run_id=run_id, speedup=speedup, speedup_lo=speedup * 0.9,
                   speedup_hi=speedup * 1.1, q_drop=0.001, q_drop_lo=-0.01, q_drop_hi=0.01,
                   n_test=270, backend="torch-fp32")  # fmt: skip
    return SweepSummary("parent", (target, target), MetricInfo(), {"noise_floor": noise},
                        Constraints(0.01), [], [row], [], [], row)  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one takes seconds); a model per test."""
    path = tmp_path_factory.mktemp("registry")
    return MlflowClient(f"sqlite:///{path / 'mlflow.db'}"), path


@pytest.fixture
def registry(store):
    client, _ = store
    name = next(NAMES)
    client.create_registered_model(name)
    return client, name


def hold(registry, speedup: float, target: str = "torch_b64") -> str:
    """A version tagged like ``register`` tags it, holding the alias."""
    client, name = registry
    tags = {SPEEDUP_TAG: f"{speedup:.6g}", TARGET_TAG: target}
    v = client.create_model_version(name, "file:///nowhere", tags=tags).version
    client.set_registered_model_alias(name, ALIAS, v)
    return v


@pytest.mark.parametrize(
    ("held", "new", "noise", "moves"),
    [
        (2.0, 2.1, 0.10, False),  # +5%: inside a 10% floor, a tie
        (2.0, 2.2, 0.10, False),  # exactly the floor: not beyond it
        (2.0, 2.21, 0.10, True),  # beyond the floor
        (2.0, 1.5, 0.10, False),  # slower
        (2.0, 1.99, 0.0, False),  # slower, no floor
        (2.0, 2.01, 0.0, True),  # no floor: any gain moves it
        (2.0, 3.0, 0.60, False),  # a wide floor holds even +50%
    ],
)
def test_the_alias_moves_only_beyond_the_noise_floor(registry, held, new, noise, moves):
    v = hold(registry, held)
    client, name = registry
    move, why = decide(client, name, ALIAS, new, summary(new, noise))
    assert move is moves, why
    assert (f"moved from version {v}" in why) is moves
    assert (f"kept on version {v}" in why) is not moves


def test_no_holder_sets_it_and_another_target_keeps_it(registry):
    client, name = registry
    assert decide(client, name, ALIAS, 1.0, summary(1.0, 0.1)) == (True, "set (no version held it)")
    v = hold(registry, 1.0, target="ort_b1")
    move, why = decide(client, name, ALIAS, 5.0, summary(5.0, 0.0, target="torch_b64"))
    assert not move and f"kept on version {v}" in why and "ort_b1" in why


def test_register_moves_the_alias_only_for_a_real_gain(store):
    """``register`` end to end: the first version takes the alias, a tie leaves it, a
    clear gain moves it; each version says why in its tags."""
    registry, path = store
    uri, name = f"sqlite:///{path / 'mlflow.db'}", next(NAMES)
    model, _ = trained_mlp((32,), epochs=1)
    onnx = to_onnx(model, TASK.example_input(2))
    exp = registry.create_experiment("e", artifact_location=(path / "art").as_uri())
    cfg = ExperimentConfig.model_validate(
        {"registry": {"model_name": name, "alias": ALIAS}, "sweep": {}}
    )
    assert alias_of(cfg) == ALIAS
    said: list[str] = []
    versions, holder = [], None
    for speedup in (2.0, 2.1, 2.5):  # floor 10%: set, tie (kept), beyond (moved)
        run_id = registry.create_run(exp).info.run_id
        log_onnx_model(uri, run_id, onnx, TASK, model, {"accelab.backend": "torch-fp32"})
        s = summary(speedup, 0.10, run_id)
        _, version, moved = register(registry, cfg, s, "p", said.append)
        versions.append((version, moved))
        holder = version if moved else holder
        held = registry.get_model_version_by_alias(name, ALIAS)
        assert held.version == holder  # the alias is where the decision says, after each run
        tags = registry.get_model_version(name, version).tags
        assert tags[SPEEDUP_TAG] == f"{speedup:.6g}" and tags[TARGET_TAG] == "torch_b64"
        assert "accelab.alias_decision" in tags
    assert [m for _, m in versions] == [True, False, True]
    assert held.version == versions[2][0]
    assert "not faster beyond the 10% noise floor" in said[1]


def test_default_alias_is_named_after_the_constraint():
    cfg = ExperimentConfig.model_validate({"sweep": {"constraints": {"max_accuracy_drop": 0.02}}})
    assert alias_of(cfg) == "fastest-within-2pt"


def test_a_fractional_default_alias_is_a_valid_mlflow_alias():
    from mlflow.utils.validation import _validate_model_alias_name

    cfg = ExperimentConfig.model_validate({"sweep": {"constraints": {"max_accuracy_drop": 0.005}}})
    assert alias_of(cfg) == "fastest-within-0_5pt"
    _validate_model_alias_name(alias_of(cfg))  # raises on '.'
