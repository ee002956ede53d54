"""The sweep summary from MLflow Run entities built in memory (pure, milliseconds; the
mutation group ``summary`` runs these per mutant): which metric of which target a row
reads, the per-target baseline and noise floor, the searched knobs, the marks and the
recommendation; and, on a real sqlite store, which runs are the sweep's trials."""

from __future__ import annotations

import json

import pytest
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
from mlflow.tracking import MlflowClient

from accelab.errors import UsageError
from accelab.sweep.pareto import Constraints
from accelab.sweep.summary import (
    TARGETS_TAG,
    MetricInfo,
    TrialRow,
    build_summary,
    child_runs,
    find_parent,
    quality_names,
    summary_of,
    targets_of,
    trial_row,
)
from accelab.tracking import names


def run(run_id: str, metrics=None, params=None, tags=None) -> Run:
    """A Run as MlflowClient.get_run returns it (latest value per metric)."""
    data = RunData(
        metrics=[Metric(k, v, 0, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, v) for k, v in (params or {}).items()],
        tags=[RunTag(k, v) for k, v in (tags or {}).items()],
    )
    return Run(RunInfo(run_id, "0", "u", "FINISHED", 0, 0, "active"), data)


TARGETS = [["torch_b64", "torch, batch 64"], ["ort_b1", "onnxruntime, batch 1"]]
PARENT = run(
    "parent-run",
    metrics={
        "baseline_accuracy": 0.95,
        "baseline_accuracy.ort_b1": 0.94,
        "baseline_latency_p50_ms": 2.0,
        "baseline_latency_p50_ms.ort_b1": 0.5,
        "aa_speedup": 1.0,
        "aa_speedup.ort_b1": 1.1,
        "noise_floor": 0.02,
        "noise_floor.ort_b1": 0.3,
        "accuracy": 0.5,
    },  # fmt: skip
    params={"sweep.constraints.max_accuracy_drop": "0.01", "sweep.constraints.max_size_mb": "9"},
    tags={TARGETS_TAG: json.dumps(TARGETS), **MetricInfo().to_tags()},
)


def trial(tid: str, speed: float, ort_speed: float, val_drop: float, size: float, **more) -> Run:
    m = {"n_test": 270, "sparsity": 0.25, "bits": 8}
    for sfx, s in (("", speed), (".ort_b1", ort_speed)):
        m |= {f"speedup{sfx}": s, f"latency_p50_ms{sfx}": 1 / s, f"size_mb{sfx}": size,
              f"accuracy{sfx}": 0.95, f"val_accuracy_drop{sfx}": val_drop}  # fmt: skip
    tags = {names.TRIAL_ID: tid, names.STATUS: "ok", "mlflow.runName": f"name-{tid}"}
    return run(f"run-{tid}", m | more, {"searched.x": tid, "lr": "0.1"}, tags)


RUNS = [
    trial("c", 4.0, 1.0, 0.05, 0.5),  # fastest, smallest, but 5 points worse: violates
    trial("a", 2.0, 1.5, 0.0, 3.0),  # slowest on torch; on ORT a tie with b, and better
    trial("b", 3.0, 1.6, 0.005, 1.0, **{"bits": 4}),  # fastest within 1 point on torch
]


def test_the_primary_target_reads_unsuffixed_metrics_and_its_own_baseline():
    s = summary_of(PARENT, RUNS)
    assert s.target == ("torch_b64", "torch, batch 64") and s.parent_run_id == "parent-run"
    assert s.baseline == {"accuracy": 0.95, "latency_p50_ms": 2.0, "aa_speedup": 1.0,
                          "noise_floor": 0.02}  # fmt: skip
    assert s.noise == 0.02 and s.constraints == Constraints(0.01, None, 9.0)
    assert [r.trial_id for r in s.rows] == ["a", "b", "c"]  # sorted by trial id
    assert [r.speedup for r in s.rows] == [2.0, 3.0, 4.0]
    assert s.searched == ["x"] and s.metric == MetricInfo()
    assert s.recommended is s.rows[1] and s.rows[1].recommended
    assert s.front == ["c", "b", "a"] and [r.on_front for r in s.rows] == [True, True, True]
    assert [r.meets_constraints for r in s.rows] == [True, True, False]


def test_another_target_reads_its_suffixed_metrics_baseline_and_noise_floor():
    s = summary_of(PARENT, RUNS, "ort_b1")
    assert s.target == ("ort_b1", "onnxruntime, batch 1")
    assert s.baseline == {"accuracy": 0.94, "latency_p50_ms": 0.5, "aa_speedup": 1.1,
                          "noise_floor": 0.3}  # fmt: skip
    assert [r.speedup for r in s.rows] == [1.5, 1.6, 1.0]
    assert [r.bits for r in s.rows] == [8, 4, 8]  # one per trial, not per target
    # inside ORT's 30% floor b (1.6x) ties a (1.5x), and a is better on validation
    assert s.recommended.trial_id == "a" and s.front == ["a"]
    with pytest.raises(ValueError):
        summary_of(PARENT, RUNS, "ort_b64")  # not a target of this sweep


def test_the_searched_knobs_are_every_trials_searched_params_sorted():
    more = run("run-d", params={"searched.y": "1", "searched.a.b": "2", "lr": "3"},
               tags={names.TRIAL_ID: "d"})  # fmt: skip
    assert summary_of(PARENT, [*RUNS, more]).searched == ["a.b", "x", "y"]
    assert summary_of(PARENT, []).searched == [] and summary_of(PARENT, []).recommended is None


def test_a_sweep_without_a_targets_tag_has_the_torch_target_only():
    assert targets_of(run("p")) == [("torch_b64", "torch")]
    assert targets_of(PARENT) == [("torch_b64", "torch, batch 64"),
                                  ("ort_b1", "onnxruntime, batch 1")]  # fmt: skip


def test_a_trial_row_reads_every_field_of_its_target():
    r = trial("t", 2.0, 3.0, 0.01, 1.5, **{"simulated.ort_b1": 1.0, "packed_size_mb": 0.7})
    row = trial_row(r, MetricInfo(), ".ort_b1")
    both = run("b", tags={names.BACKEND: "torch-fp32", names.BACKEND + ".ort_b1": "ort-fp32"})
    assert trial_row(both, MetricInfo(), ".ort_b1").backend == "ort-fp32"  # the target's
    assert trial_row(both, MetricInfo()).backend == "torch-fp32"
    assert (row.trial_id, row.name, row.run_id, row.status) == ("t", "name-t", "run-t", "ok")
    assert (row.speedup, row.size_mb, row.q, row.val_q_drop) == (3.0, 1.5, 0.95, 0.01)
    assert row.latency_p50_ms == pytest.approx(1 / 3) and row.simulated is True
    assert row.packed_size_mb is None  # logged for the primary target only
    assert (row.n_test, row.sparsity, row.bits) == (270, 0.25, 8)
    assert row.searched == {"x": "t"}  # the "searched." prefix dropped, other params not read
    primary = trial_row(r, MetricInfo())
    assert primary.packed_size_mb == 0.7 and primary.speedup == 2.0 and primary.simulated is False


def test_a_trial_row_without_tags_falls_back():
    bare = run("0123456789abcdef", {"speedup": 1.2})
    row = trial_row(bare, MetricInfo())
    assert (row.trial_id, row.name, row.status, row.backend) == ("01234567", "", "unfinished", "")
    assert row.simulated is False and row.searched == {}
    tagged = run("r", tags={names.SIMULATED: "true", names.TARGET_ERROR + ".ort_b1": "no op"})
    assert trial_row(tagged, MetricInfo()).simulated is True
    assert trial_row(tagged, MetricInfo(), ".ort_b1").status == "n/a: no op"
    assert trial_row(tagged, MetricInfo()).status == "unfinished"  # the error is ORT's


def test_rows_flatten_under_the_metric_name_with_the_knobs():
    row = TrialRow("t", q=0.9, q_drop=0.01, val_q_drop_hi=0.02, searched={"prune.amount": "0.5"})
    flat = row.as_dict("perplexity")
    assert (flat["perplexity"], flat["perplexity_drop"], flat["val_perplexity_drop_hi"]) == (
        0.9, 0.01, 0.02
    )  # fmt: skip
    assert flat["prune.amount"] == "0.5" and "searched" not in flat and "q" not in flat
    assert flat["trial_id"] == "t" and len(flat) == len(TrialRow.__dataclass_fields__)
    assert quality_names("accuracy")["val_q_drop_lo"] == "val_accuracy_drop_lo"


def test_build_summary_marks_fronts_constraints_and_the_one_recommendation():
    rows = [
        TrialRow("fast", speedup=3.0, q=0.9, val_q_drop=0.02, size_mb=2.0),  # violates 1 pt
        TrialRow("ok", speedup=2.0, q=0.95, val_q_drop=0.0, size_mb=1.0),
        TrialRow("sim", simulated=True, q=0.95, val_q_drop=0.0, size_mb=0.1),
        TrialRow("dead", status="failed", speedup=9.0, q=0.99, val_q_drop=-0.1, size_mb=0.1),
    ]
    s = build_summary("p", ("k", "l"), MetricInfo(), {"noise_floor": 0.0}, Constraints(0.01),
                      ["x"], rows)  # fmt: skip
    assert (s.front, s.size_front) == (["fast", "ok"], ["ok"])
    assert [r.on_front for r in rows] == [True, True, False, False]
    assert [r.on_size_front for r in rows] == [False, True, False, False]
    assert [r.meets_constraints for r in rows] == [False, True, True, False]
    assert [r.recommended for r in rows] == [False, True, False, False]
    assert s.recommended is rows[1] and (s.parent_run_id, s.target, s.searched) == (
        "p", ("k", "l"), ["x"]
    )  # fmt: skip
    tie = build_summary("p", ("k", "l"), MetricInfo(), {"noise_floor": 0.6}, Constraints(0.05),
                        [], [TrialRow(r.trial_id, speedup=r.speedup, q=r.q, val_q_drop=r.val_q_drop,
                                      size_mb=r.size_mb) for r in rows[:2]])  # fmt: skip
    assert tie.noise == 0.6 and tie.recommended.trial_id == "ok"  # 3.0x ties 2.0x inside 60%


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two sweeps in one experiment: a trial of each, and a non-trial child of the second."""
    path = tmp_path_factory.mktemp("sweeps")
    client = MlflowClient(f"sqlite:///{path / 'mlflow.db'}")
    exp = client.create_experiment("s", artifact_location=(path / "art").as_uri())
    parents = []
    for i in range(2):
        p = client.create_run(exp, start_time=1000 + i, tags={names.KIND: "sweep"}).info.run_id
        for kind in ("trial", "baseline")[: i + 1]:
            tags = {names.KIND: kind, "mlflow.parentRunId": p, names.TRIAL_ID: f"{kind}{i}"}
            client.create_run(exp, tags=tags)
        parents.append(p)
    client.create_run(exp, start_time=5000, tags={names.KIND: "train"})  # newest, not a sweep
    return client, parents


def test_find_parent_is_the_newest_sweep_or_the_one_named(store):
    client, (first, second) = store
    assert find_parent(client, "s").info.run_id == second
    assert find_parent(client, "s", first).info.run_id == first
    with pytest.raises(UsageError, match="no accelab sweep in MLflow experiment 'nope' at sqlite"):
        find_parent(client, "nope")


def test_child_runs_are_that_sweeps_trials_only(store):
    client, (first, second) = store
    tids = [r.data.tags[names.TRIAL_ID] for r in child_runs(client, client.get_run(second))]
    assert tids == ["trial1"]
    assert [r.data.tags[names.TRIAL_ID] for r in child_runs(client, client.get_run(first))] == [
        "trial0"
    ]


def test_both_frontiers_judge_quality_on_validation_not_on_test():
    """ "val" is better on validation, "test" on test (and slower, and bigger): selecting on
    the test split would put "test" on both frontiers."""
    rows = [
        TrialRow("val", speedup=2.0, q=0.80, val_q_drop=0.0, size_mb=1.0),
        TrialRow("test", speedup=1.5, q=0.99, val_q_drop=0.05, size_mb=2.0),
    ]
    s = build_summary("p", ("k", "l"), MetricInfo(), {}, Constraints(0.1), [], rows)
    assert (s.front, s.size_front) == (["val"], ["val"])


def test_without_a_noise_floor_any_gain_counts_and_with_one_ties_are_kept():
    def rows():
        return [TrialRow("a", speedup=2.1, q=0.9, val_q_drop=0.01, size_mb=1.0),
                TrialRow("b", speedup=2.0, q=0.9, val_q_drop=0.0, size_mb=1.0)]  # fmt: skip

    none = build_summary("p", ("k", "l"), MetricInfo(), {}, Constraints(0.05), [], rows())
    assert none.noise == 0.0 and none.front == ["a", "b"] and none.recommended.trial_id == "a"
    floor = build_summary("p", ("k", "l"), MetricInfo(), {"noise_floor": 0.1}, Constraints(0.05),
                          [], rows())  # fmt: skip
    assert floor.front == ["b"] and floor.recommended.trial_id == "b"  # a tie: b is better


def test_a_summary_keeps_what_it_was_given_and_may_recommend_nothing():
    rows = [TrialRow("x", speedup=3.0, q=0.5, val_q_drop=0.2, size_mb=1.0)]
    metric = MetricInfo("perplexity", higher_is_better=False, relative_drop=True)
    s = build_summary("p", ("k", "l"), metric, {"noise_floor": 0.0}, Constraints(0.01), [], rows)
    assert s.recommended is None and not rows[0].recommended and not rows[0].meets_constraints
    assert (s.metric, s.constraints, s.rows, s.front) == (metric, Constraints(0.01), rows, ["x"])


def test_a_failed_or_simulated_row_stays_so_as_a_point():
    from accelab.sweep.summary import point

    p = point(TrialRow("f", status="failed", simulated=True, q=0.9), MetricInfo())
    assert (p.status, p.simulated) == ("failed", True)


def test_the_quality_columns_of_a_metric_and_the_default_names():
    assert quality_names("loss") == {
        "q": "loss", "q_lo": "loss_lo", "q_hi": "loss_hi", "q_drop": "loss_drop",
        "q_drop_lo": "loss_drop_lo", "q_drop_hi": "loss_drop_hi", "val_q": "val_loss",
        "val_q_drop": "val_loss_drop", "val_q_drop_lo": "val_loss_drop_lo",
        "val_q_drop_hi": "val_loss_drop_hi",
    }  # fmt: skip
    flat = TrialRow("t", q=0.5, val_q_drop_hi=0.1).as_dict()
    assert (flat["q"], flat["val_q_drop_hi"]) == (0.5, 0.1)
