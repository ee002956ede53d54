"""A compact live view of a sweep (a Tune callback on the driver), instead of Ray's logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune import Callback

from accelab.sweep.space import assignments
from accelab.sweep.table import short
from accelab.tracking import names


def knobs(config: dict[str, Any]) -> str:
    return " ".join(
        f"{k.split('.')[-1]}={short(str(v))}" for k, v in sorted(assignments(config).items())
    )


class SweepProgress(Callback):
    """Prints one line when a trial starts and one when it ends, with the best so far:
    the fastest measured trial within the quality constraint (on validation) that is
    faster than the dense model by more than the noise floor."""

    def __init__(
        self,
        total: int,
        metric: str,
        max_drop: float,
        noise: float = 0.0,
        echo: Callable[[str], None] = print,
    ):
        self.total, self.metric, self.max_drop, self.echo = total, metric, max_drop, echo
        self.noise = noise
        self.done: set[str] = set()
        self.running: set[str] = set()
        self.last: dict[str, dict[str, Any]] = {}
        self.best: tuple[float, str] | None = None

    def _head(self) -> str:
        return f"[{len(self.done):>2}/{self.total} done, {len(self.running)} running]"

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self.echo(f"{self._head()} start {trial.trial_id}: {knobs(trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "status" in result:
            self.last[trial.trial_id] = result

    def describe(self, trial_id: str, r: dict[str, Any]) -> str:
        m = self.metric
        speed = "n/a (simulated)"
        if names.M_SPEEDUP in r:
            speedup = r[names.M_SPEEDUP]
            lo, hi = r.get(names.M_SPEEDUP_LO, 0), r.get(names.M_SPEEDUP_HI, 0)
            speed = f"{speedup:.2f}x ({lo:.2f}-{hi:.2f})"
            qualifies = speedup > 1.0 + self.noise  # measurably faster than dense, as recommend
            if (
                qualifies
                and r[names.drop(names.on_val(m))] <= self.max_drop
                and (self.best is None or speedup > self.best[0])
            ):
                self.best = (speedup, trial_id)
        drop = names.drop(m)
        return (
            f"{m} {r[m]:.4f} (drop {r[drop] * 100:+.2f} [{r[names.lo(drop)] * 100:+.2f},"
            f"{r[names.hi(drop)] * 100:+.2f}]) speedup {speed} size {r[names.M_SIZE_RATIO]:.2f}x "
            f"[{r['backend']}]"
        )

    def _finish(self, trial, outcome: str) -> None:
        self.running.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        r = self.last.get(trial.trial_id, {})
        if r.get("status") == "ok" and r.get("stage") == "final":
            outcome = self.describe(trial.trial_id, r)
        elif r.get("status", "ok") != "ok":
            outcome = r["status"]
        best = f" | best so far: {self.best[1]} {self.best[0]:.2f}x" if self.best else ""
        self.echo(f"{self._head()} done  {trial.trial_id}: {outcome}{best}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "ERROR (see its MLflow run and Ray's trial log)")
