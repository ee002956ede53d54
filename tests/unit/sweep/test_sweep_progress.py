"""The sweep's live view: "best so far" is chosen as the recommendation is, on the
validation drop (the test split is reported, never selected on)."""

from __future__ import annotations

from types import SimpleNamespace

from accelab.sweep.progress import SweepProgress


def result(speedup: float, val_drop: float, test_drop: float) -> dict:
    return {
        "status": "ok", "stage": "final", "backend": "ort-int8-static",
        "speedup": speedup, "speedup_lo": speedup * 0.95, "speedup_hi": speedup * 1.05,
        "accuracy": 0.9, "accuracy_drop": test_drop, "accuracy_drop_lo": test_drop - 0.01,
        "accuracy_drop_hi": test_drop + 0.01, "val_accuracy_drop": val_drop, "size_ratio": 0.5,
    }  # fmt: skip


def finish(progress: SweepProgress, trial_id: str, r: dict) -> None:
    trial = SimpleNamespace(trial_id=trial_id, config={})
    progress.on_trial_start(0, [], trial)
    progress.on_trial_result(0, [], trial, r)
    progress.on_trial_complete(0, [], trial)


def test_best_so_far_is_judged_on_the_validation_drop_not_the_test_drop():
    """ "test" meets the 1-point constraint on test only, "val" on validation only: the
    faster "test" must not become the best so far."""
    lines: list[str] = []
    progress = SweepProgress(total=2, metric="accuracy", max_drop=0.01, echo=lines.append)
    finish(progress, "val", result(2.0, val_drop=0.005, test_drop=0.05))
    finish(progress, "test", result(3.0, val_drop=0.05, test_drop=0.0))
    assert progress.best == (2.0, "val")
    assert lines[-1].endswith("| best so far: val 2.00x")
    assert "accuracy 0.9000 (drop +0.00 [-1.00,+1.00]) speedup 3.00x (2.85-3.15)" in lines[-1]


def test_best_so_far_must_beat_the_noise_floor_like_the_recommendation():
    """A 1.03x trial with a 5% A/A floor is not measurably faster than not compressing:
    no best so far until a trial beats 1.05x."""
    lines: list[str] = []
    progress = SweepProgress(3, "accuracy", max_drop=0.01, noise=0.05, echo=lines.append)
    finish(progress, "noise", result(1.03, val_drop=0.0, test_drop=0.0))
    assert progress.best is None and "best so far" not in lines[-1]
    finish(progress, "edge", result(1.05, val_drop=0.0, test_drop=0.0))
    assert progress.best is None
    finish(progress, "real", result(1.2, val_drop=0.0, test_drop=0.0))
    assert progress.best == (1.2, "real") and lines[-1].endswith("| best so far: real 1.20x")
