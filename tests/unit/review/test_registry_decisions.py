"""The registry's decisions without a store (pure, milliseconds; the mutation group
``registry`` runs these per mutant): when the alias moves, which logged model is the one
that was measured, which version already serves a model, what a version's tags say and
why a recommendation is refused. Real MLflow entities (ModelVersion, LoggedModel), built
as the store returns them."""

from __future__ import annotations

import pytest
from mlflow.entities import LoggedModel
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

from accelab.config.schema import ExperimentConfig
from accelab.review.registry import (
    SPEEDUP_TAG,
    TARGET_TAG,
    alias_decision,
    alias_of,
    measured_model,
    refusal,
    same_model,
    served_summary,
    version_tags,
)
from accelab.sweep.pareto import Constraints
from accelab.sweep.summary import MetricInfo, SweepSummary, TrialRow
from accelab.tracking import names
from accelab.variant.record import MODEL_SHA_TAG


def version(v: str, run_id: str = "", **tags: str) -> ModelVersion:
    return ModelVersion("m", v, 0, run_id=run_id,
                        tags=[ModelVersionTag(k, val) for k, val in tags.items()])  # fmt: skip


def holder(v: str, speedup: str | None, target: str = "ort_b1") -> ModelVersion:
    tags = {TARGET_TAG: target} | ({SPEEDUP_TAG: speedup} if speedup is not None else {})
    return version(v, **tags)


def logged(run_id: str, backend: str | None, sha: str | None = None) -> LoggedModel:
    tags = {k: v for k, v in ((names.BACKEND, backend), (MODEL_SHA_TAG, sha)) if v is not None}
    return LoggedModel("0", f"m-{run_id}-{backend}", "model", "file:///x", 0, 0,
                       source_run_id=run_id, tags=tags)  # fmt: skip


# -- the alias ---------------------------------------------------------------------------


def test_no_holder_sets_the_alias():
    assert alias_decision(None, 0.5, "ort_b1", 0.1) == (True, "set (no version held it)")


def test_a_holder_chosen_for_another_target_keeps_the_alias_saying_both():
    move, why = alias_decision(holder("4", "1.0", target="torch_b64"), 9.0, "ort_b1", 0.0)
    assert (move, why) == (
        False, "kept on version 4: it was chosen for target torch_b64, this one for ort_b1"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "noise", "moves"),
    [
        ("2", 2.5, 0.25, False),  # exactly the floor (2 * 1.25 = 2.5, exact in binary)
        ("2", 2.5000001, 0.25, True),  # just beyond it
        ("2", 2.4999999, 0.25, False),
        ("2", 2.0000001, 0.0, True),  # no floor: any gain
        ("2", 2.0, 0.0, False),  # equal is not faster
        ("4", 4.9, 0.25, False),  # the floor scales with the held speedup (4 * 1.25 = 5)
        ("0.5", 0.6, 0.1, True),  # a slower-than-dense holder is still beaten by more
    ],
)
def test_the_alias_moves_only_beyond_the_noise_floor(old, new, noise, moves):
    move, why = alias_decision(holder("7", old), new, "ort_b1", noise)
    assert move is moves
    if moves:
        assert why == f"moved from version 7 ({float(old):.2f}x) to {new:.2f}x"
    else:
        assert why == (f"kept on version 7 ({float(old):.2f}x): {new:.2f}x is not faster "
                       f"beyond the {noise:.0%} noise floor")  # fmt: skip


@pytest.mark.parametrize("speedup", [None, ""])
def test_a_holder_without_a_recorded_speedup_counts_as_zero(speedup):
    """A version registered before the speedup tag existed (or with it empty) yields."""
    move, why = alias_decision(holder("2", speedup), 0.01, "ort_b1", 0.1)
    assert move and why == "moved from version 2 (0.00x) to 0.01x"


# -- which model and version ---------------------------------------------------------------


def test_the_measured_model_is_the_one_running_the_measured_backend():
    onnx, torch_model = logged("r", "ort-int8-dynamic"), logged("r", "torch-int8-x86")
    assert measured_model([onnx, torch_model], "torch-int8-x86") is torch_model
    assert measured_model([onnx, torch_model], "ort-int8-dynamic") is onnx
    assert measured_model([onnx, torch_model], "ort-fp32") is None
    assert measured_model([], "ort-fp32") is None


def test_a_version_of_the_same_run_and_backend_is_the_same_model():
    model = logged("r1", "ort-fp32")
    other_backend = version("1", run_id="r1", **{names.BACKEND: "torch-fp32"})
    other_run = version("2", run_id="r2", **{names.BACKEND: "ort-fp32"})
    same = version("3", run_id="r1", **{names.BACKEND: "ort-fp32"})
    assert same_model([other_backend, other_run, same], model) is same
    assert same_model([other_backend, other_run], model) is None
    assert same_model([], model) is None


def test_a_version_with_the_same_file_is_the_same_model_and_the_first_one_wins():
    model = logged("r9", "ort-fp32", sha="abc")
    first = version("1", run_id="r1", **{names.BACKEND: "torch-fp32", MODEL_SHA_TAG: "abc"})
    second = version("2", run_id="r2", **{names.BACKEND: "ort-fp32", MODEL_SHA_TAG: "abc"})
    assert same_model([version("0", run_id="r0", **{MODEL_SHA_TAG: "x"}), first, second],
                      model) is first  # fmt: skip


def test_without_a_digest_only_the_run_and_backend_match():
    """A model without a file digest matches no version by digest, even one without one."""
    model = logged("r9", "ort-fp32")
    assert same_model([version("1", run_id="r1"), version("2", run_id="r9")], model) is None


# -- what is said ----------------------------------------------------------------------------


def test_a_refusal_names_the_backend_measured_and_those_logged():
    models = [logged("r", "torch-fp32"), logged("r", "ort-fp32"), logged("r", "torch-fp32")]
    assert refusal(models, "torch-int8-x86", "torch b64", "int8 modules cannot be exported") == (
        "not registered: the recommendation for torch b64 was measured on torch-int8-x86, but "
        "the trial's MLflow Models run ort-fp32, torch-fp32 (int8 modules cannot be exported)"
    )
    assert refusal([], "torch-fp32", "torch b64", None) == (
        "not registered: the recommendation for torch b64 was measured on torch-fp32, but the "
        "trial's MLflow Models run nothing; add an onnxruntime target to register what is served"
    )


def summary(target: str, relative: bool = False, row: TrialRow | None = None) -> SweepSummary:
    return SweepSummary("parent", (target, f"label of {target}"), MetricInfo(relative_drop=relative),
                        {names.M_NOISE_FLOOR: 0.0312}, Constraints(0.01), [], [], [], [],
                        row)  # fmt: skip


def test_version_tags_say_what_was_measured_where_and_how_sure():
    row = TrialRow("t1", run_id="run7", speedup=2.3456, speedup_lo=2.1, speedup_hi=2.5,
                   q_drop=0.0123, q_drop_lo=-0.004, q_drop_hi=0.0251, n_test=270.0,
                   backend="ort-int8-static")  # fmt: skip
    assert version_tags(summary("ort_b1", row=row), "sweep3") == {
        names.SPEEDUP: "2.35x (2.10-2.50, 95% CI)",
        SPEEDUP_TAG: "2.3456",
        names.QUALITY_DROP: "+1.23 [-0.40,+2.51] points of test accuracy on 270 examples",
        names.BACKEND: "ort-int8-static",
        TARGET_TAG: "ort_b1",
        names.TARGET_LABEL: "label of ort_b1",
        names.NOISE_FLOOR: "0.031",
        names.SWEEP_RUN: "sweep3",
        names.TRIAL_RUN: "run7",
    }
    relative = version_tags(summary("ort_b1", relative=True, row=row), "s")
    assert relative[names.QUALITY_DROP].endswith(" percent of test accuracy on 270 examples")
    row.n_test = None
    assert version_tags(summary("t", row=row), "s")[names.QUALITY_DROP].endswith(" on 0 examples")


def test_the_served_summary_is_the_first_onnx_runtime_targets():
    torch_b64, ort_b1, ort_b64 = summary("torch_b64"), summary("ort_b1"), summary("ort_b64")
    assert served_summary([torch_b64, ort_b1, ort_b64]) is ort_b1
    assert served_summary([torch_b64, summary("sort_b1")]) is torch_b64  # a prefix, not a part


def test_registry_target_picks_the_served_summary():
    torch_b64, ort_b64, ov_b16 = summary("torch_b64"), summary("ort_b64"), summary("ov_b16")
    assert served_summary([torch_b64, ort_b64, ov_b16], "ov_b16") is ov_b16  # the OpenVINO IR
    assert served_summary([torch_b64, ort_b64, ov_b16], "torch_b64") is torch_b64
    assert served_summary([torch_b64, ort_b64, ov_b16], None) is ort_b64


def test_the_default_alias_of_a_relative_metric_is_in_percent():
    cfg = ExperimentConfig.model_validate(
        {"trainable": {"name": "pylm"}, "sweep": {"constraints": {"max_quality_drop": 0.05}}}
    )
    assert alias_of(cfg) == "fastest-within-5pct"
