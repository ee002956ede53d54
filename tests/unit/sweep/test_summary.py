"""A sweep's summary rebuilt from real MLflow runs (sqlite, no Ray): selection on the
validation split, one baseline per comparison, real vs computed sizes, the noise floor."""

from __future__ import annotations

import csv
import math

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from accelab.sweep.summary import MetricInfo, TrialRow, summarize
from accelab.sweep.table import format_table, mark, recommendation_line, write_csv

BASE = {"baseline_accuracy": 0.96, "baseline_accuracy_lo": 0.93, "baseline_accuracy_hi": 0.98,
        "baseline_n_test": 270, "baseline_latency_p50_ms": 2.0, "baseline_size_mb": 4.0,
        "aa_speedup": 1.0, "aa_speedup_lo": 0.96, "aa_speedup_hi": 1.04, "noise_floor": 0.04}  # fmt: skip


def trial_metrics(acc, drop, val_drop, p50=None, base_p50=None, size=1.0, packed=None):
    m = {"accuracy": acc, "accuracy_lo": acc - 0.03, "accuracy_hi": acc + 0.02,
         "accuracy_drop": drop, "accuracy_drop_lo": drop - 0.01, "accuracy_drop_hi": drop + 0.01,
         "val_accuracy": 0.95 - val_drop, "val_accuracy_drop": val_drop,
         "val_accuracy_drop_lo": val_drop - 0.01, "val_accuracy_drop_hi": val_drop + 0.01,
         "size_mb": size, "size_ratio": size / 4.0, "n_test": 270}  # fmt: skip
    if p50 is not None:
        speed = base_p50 / p50
        m.update(latency_p50_ms=p50, baseline_latency_p50_ms=base_p50, speedup=speed,
                 speedup_lo=speed * 0.95, speedup_hi=speed * 1.05)  # fmt: skip
    if packed is not None:
        m["packed_size_mb"] = packed
    return m


def make_sweep(tmp_path, trials: dict[str, tuple[dict, bool]]):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("s", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"accelab.kind": "sweep", **MetricInfo().to_tags()})
    pid = parent.info.run_id
    client.log_batch(pid, metrics=[Metric(k, v, 0, 0) for k, v in BASE.items()],
                     params=[Param("sweep.constraints.max_accuracy_drop", "0.01")])  # fmt: skip
    for tid, (metrics, simulated) in trials.items():
        tags = {"accelab.kind": "trial", "mlflow.parentRunId": pid, "accelab.trial_id": tid,
                "accelab.status": "ok", "accelab.simulated": str(simulated).lower(),
                "accelab.backend": "fake-quant (simulated)" if simulated else "torch-fp32",
                "mlflow.runName": f"name-{tid}"}  # fmt: skip
        run = client.create_run(exp, tags=tags)
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                         params=[Param("searched.compression.prune.method", tid)])  # fmt: skip
    return client, client.get_run(pid)


@pytest.fixture
def sweep(tmp_path):
    return make_sweep(tmp_path, {
        # best on TEST, but its validation drop breaks the 1-point constraint
        "t1": (trial_metrics(0.97, -0.01, 0.03, p50=0.5, base_p50=2.0), False),
        # fine on validation, worse on test: selection must pick it, never t1
        "t2": (trial_metrics(0.94, 0.02, 0.005, p50=1.0, base_p50=2.4), False),
        # fake-quant: tiny computed size, fp32 file
        "t3": (trial_metrics(0.96, 0.0, 0.0, size=4.0, packed=0.5), True),
        # within the noise floor of t2's speedup (2.4x vs 2.35x) and more accurate on validation
        "t4": (trial_metrics(0.95, 0.01, 0.0, p50=1.0, base_p50=2.35, size=2.0), False),
    })  # fmt: skip


def test_recommendation_is_chosen_on_validation_with_the_noise_floor(sweep):
    client, parent = sweep
    s = summarize(client, parent)
    by_id = {r.trial_id: r for r in s.rows}
    assert not by_id["t1"].meets_constraints  # great test numbers, bad validation drop
    assert s.noise == pytest.approx(0.04)
    # t2 (2.40x) and t4 (2.35x) are a tie within 4%: the smaller validation drop wins
    assert s.recommended.trial_id == "t4"
    line = recommendation_line(s)
    assert "trial t4" in line and "validation drop +0.00" in line


def test_without_noise_floor_the_faster_wins(tmp_path):
    client, parent = make_sweep(tmp_path, {
        "t2": (trial_metrics(0.94, 0.02, 0.005, p50=1.0, base_p50=2.4), False),
        "t4": (trial_metrics(0.95, 0.01, 0.0, p50=1.0, base_p50=2.35), False),
    })  # fmt: skip
    client.log_metric(parent.info.run_id, "noise_floor", 0.0, step=1)
    s = summarize(client, client.get_run(parent.info.run_id))
    assert s.recommended.trial_id == "t2"


def test_simulated_trial_is_on_no_frontier_and_its_sizes_are_separate(sweep):
    client, parent = sweep
    s = summarize(client, parent)
    t3 = next(r for r in s.rows if r.trial_id == "t3")
    assert not t3.on_front and not t3.on_size_front
    assert t3.size_mb == 4.0 and t3.packed_size_mb == 0.5
    row = next(line for line in format_table(s).splitlines() if line.startswith("t3"))
    assert "n/a (simulated)" in row and "4.000" in row and "0.500" in row


def test_each_row_shows_the_baseline_its_speedup_was_computed_against(sweep):
    client, parent = sweep
    table = format_table(client and summarize(client, parent))
    t2 = next(line for line in table.splitlines() if line.startswith("t2"))
    assert "1.000" in t2 and "2.400" in t2 and "2.40x (2.28-2.52)" in t2
    lines = table.splitlines()
    assert lines[0].startswith("target: torch")
    assert "p50 2.000 ms (A/A control)" in lines[1]
    assert "noise floor" in lines[2] and "4%" in lines[2]
    header = lines[3]
    assert "base ms" in header and "drop pts [95% CI]" in header and "packed MB" in header


def test_csv_has_every_column_under_the_metric_name(sweep, tmp_path):
    client, parent = sweep
    s = summarize(client, parent)
    write_csv(s, tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as fh:
        rows = {r["trial_id"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"t1", "t2", "t3", "t4"}
    for key in ("accuracy", "accuracy_drop_lo", "accuracy_drop_hi", "val_accuracy_drop",
                "speedup_lo", "speedup_hi", "packed_size_mb", "baseline_latency_p50_ms"):  # fmt: skip
        assert key in rows["t2"]
    assert float(rows["t2"]["val_accuracy_drop"]) == pytest.approx(0.005)


def test_metric_info_round_trips_through_the_parent_run_tags():
    lm = MetricInfo("perplexity", higher_is_better=False, relative_drop=True)
    assert MetricInfo.from_tags(lm.to_tags()) == lm
    assert MetricInfo.from_tags(MetricInfo().to_tags()) == MetricInfo()
    assert MetricInfo.from_tags({}) == MetricInfo("accuracy", True, False)  # older sweeps


def test_a_trial_row_reads_its_target_and_falls_back_sensibly(tmp_path):
    from accelab.sweep.summary import trial_row

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("rows", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp, run_name="int8", tags={"accelab.simulated": "true",
                            "accelab.backend.ort_b1": "ort-int8-dynamic",
                            "accelab.target_error.ort_b1": "export failed"})  # fmt: skip
    rid = run.info.run_id
    values = {
        "sparsity": 0.5,
        "bits": 8,
        "n_test": 270,
        "speedup": 1.1,
        "speedup.ort_b1": 3.0,
        "perplexity.ort_b1": 9.5,
        "val_perplexity_drop.ort_b1": 0.01,
        "simulated.ort_b1": 0,
    }
    client.log_batch(rid, metrics=[Metric(k, v, 0, 0) for k, v in values.items()],
                     params=[Param("searched.compression.quant.bits", "8")])  # fmt: skip
    lm = MetricInfo("perplexity", higher_is_better=False, relative_drop=True)
    row = trial_row(client.get_run(rid), lm, ".ort_b1")
    assert row.trial_id == rid[:8] and row.name == "int8" and row.run_id == rid
    assert row.status == "n/a: export failed"  # the target's own error
    assert row.backend == "ort-int8-dynamic" and row.simulated is False  # the target's
    assert (row.sparsity, row.bits, row.n_test) == (0.5, 8, 270)  # not per target
    assert row.speedup == 3.0 and row.q == 9.5 and row.val_q_drop == 0.01
    assert row.searched["compression.quant.bits"] == "8"
    primary = trial_row(client.get_run(rid), lm)
    assert primary.status == "unfinished" and primary.backend == ""
    assert primary.simulated is True and primary.speedup == 1.1 and primary.q is None


def test_constraints_come_back_from_the_sweep_params():
    from accelab.sweep.pareto import Constraints
    from accelab.sweep.summary import constraints_from

    assert constraints_from({}) == Constraints(0.01)  # the schema's default: one point
    old = {"sweep.constraints.max_accuracy_drop": "0.02", "sweep.constraints.max_latency_ms": "None",
           "sweep.constraints.max_size_mb": "1.5"}  # fmt: skip
    assert constraints_from(old) == Constraints(0.02, None, 1.5)
    lm = {
        **old,
        "sweep.constraints.max_quality_drop": "0.05",
        "sweep.constraints.max_latency_ms": "3",
    }
    assert constraints_from(lm) == Constraints(0.05, 3.0, 1.5)  # the task-neutral key wins


def test_a_row_becomes_a_point_oriented_so_that_higher_is_better():
    from dataclasses import replace

    from accelab.sweep.summary import TrialRow, point

    row = TrialRow("t", q=8.5, latency_p50_ms=2.0, size_mb=1.0, backend="ort-fp32", speedup=1.5,
                   val_q_drop=0.01)  # fmt: skip
    lm = MetricInfo("perplexity", higher_is_better=False, relative_drop=True)
    p = point(row, lm)
    assert (p.score, p.latency_ms, p.speedup, p.selection_drop) == (-8.5, 2.0, 1.5, 0.01)
    assert (p.trial_id, p.size_mb, p.backend, p.status, p.simulated) == (
        "t",
        1.0,
        "ort-fp32",
        "ok",
        False,
    )
    assert point(row, MetricInfo()).score == 8.5
    sim = point(replace(row, q=None, simulated=True, size_mb=None), MetricInfo())
    assert (sim.score, sim.latency_ms, sim.speedup, sim.size_mb) == (
        -math.inf,
        None,
        None,
        math.inf,
    )


def test_one_answer_per_target_the_recommendation_is_on_the_frontier_everywhere(tmp_path):
    """A trial timed at a noisier moment has the higher absolute p50 but the higher speedup
    over its own dense timing: the frontier and the recommendation judge speed by the same
    number, so the table, the printed frontier, pareto.csv and the plot all agree."""
    from accelab.sweep.table import format_table, target_lines

    client, parent = make_sweep(tmp_path, {
        "a": (trial_metrics(0.96, 0.0, 0.0, p50=0.9, base_p50=3.8), False),  # 4.22x
        "b": (trial_metrics(0.96, 0.0, 0.0, p50=0.8, base_p50=3.03), False),  # 3.79x
    })  # fmt: skip
    s = summarize(client, parent)
    assert s.recommended.trial_id == "a"
    assert [r.trial_id for r in s.rows if r.on_front] == ["a"]  # b: as good, slower beyond 4%
    marks = {line.split()[0]: line for line in format_table(s).splitlines()[4:6]}
    assert " *F " in marks["a"] and " F " not in marks["b"]  # recommended and on the frontier
    assert "frontier: a 4.22x" in target_lines([s])[0]
    write_csv(s, tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as fh:
        on_front = {r["trial_id"]: r["on_front"] for r in csv.DictReader(fh)}
    assert on_front == {"a": "True", "b": "False"}


def test_speedups_inside_the_noise_floor_are_ties_in_the_frontier_too(tmp_path):
    client, parent = make_sweep(tmp_path, {
        "a": (trial_metrics(0.96, 0.0, 0.002, p50=1.0, base_p50=2.40), False),  # 2.40x
        "b": (trial_metrics(0.96, 0.0, 0.000, p50=1.0, base_p50=2.35), False),  # 2.35x: a tie
    })  # fmt: skip
    s = summarize(client, parent)
    # within the 4% floor b is as fast as a and better on validation: b dominates a
    assert [r.trial_id for r in s.rows if r.on_front] == ["b"]
    assert s.recommended.trial_id == "b"
    assert "then the smaller size" in format_table(s)


@pytest.mark.parametrize(
    ("recommended", "on_front", "on_size_front", "expected"),
    [(True, True, False, "*F"), (True, False, True, "*S"), (True, False, False, "*"),
     (False, True, False, "F"), (False, False, True, "S"), (False, False, False, "")],
)  # fmt: skip
def test_the_recommendation_mark_keeps_the_frontier_mark(
    recommended, on_front, on_size_front, expected
):
    row = TrialRow("t", recommended=recommended, on_front=on_front, on_size_front=on_size_front)
    assert mark(row) == expected
