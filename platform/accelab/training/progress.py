"""A compact per-epoch progress line, read from the MLflow run that rank 0 writes."""

from __future__ import annotations

import threading
from collections.abc import Callable

from mlflow.tracking import MlflowClient

from accelab.tracking import names
from accelab.training.sync import with_retry


def columns(metric: str) -> tuple[tuple[str, str], ...]:
    short = "acc" if metric == "accuracy" else metric
    return (
        ("train_loss", "loss {:.4f}"),
        (names.on_val(metric), f"val_{short} {{:.4f}}"),
        ("samples_per_s", "{:,.0f} samples/s"),
        ("epoch_s", "{:.2f} s"),
        (names.on_test(metric), f"test_{short} {{:.4f}}"),
    )


def format_epoch(
    step: int, epochs: int, values: dict[str, float], prefix: str = "", metric: str = "accuracy"
) -> str:
    parts = [f"epoch {step + 1}/{epochs}"]
    parts += [fmt.format(values[prefix + k]) for k, fmt in columns(metric) if prefix + k in values]
    return "  ".join(parts)


class EpochProgress:
    """Background thread polling ``run_id``'s metric history; prints each new epoch once."""

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        epochs: int,
        echo: Callable[[str], None] = print,
        prefix: str = "",
        interval_s: float = 1.0,
        metric: str = "accuracy",
        final_s: float = 30.0,
    ):
        self.client = MlflowClient(tracking_uri)
        self.run_id, self.epochs, self.echo, self.prefix = run_id, epochs, echo, prefix
        self.interval_s, self.metric, self.final_s = interval_s, metric, final_s
        self.key = f"{prefix}val_{metric}"
        # A resumed run already has epochs and restarts recorded: report only what is new.
        self.printed = {m.step for m in self.client.get_metric_history(run_id, self.key)}
        self.restarts = self.client.get_run(run_id).data.tags.get(names.RESTARTS, "0")
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the thread and the final poll never print the same epoch
        self._thread = threading.Thread(target=self._run, daemon=True, name="accelab-progress")

    def poll(self) -> None:
        with self._lock:
            self._poll()

    def _poll(self) -> None:
        restarts = self.client.get_run(self.run_id).data.tags.get(names.RESTARTS, "0")
        if restarts != self.restarts:
            self.restarts = restarts
            self.echo(f"resumed from the last checkpoint (restart {restarts})")
        steps = sorted({m.step for m in self.client.get_metric_history(self.run_id, self.key)})
        new = [s for s in steps if s not in self.printed]
        if not new:
            return
        by_step: dict[int, dict[str, float]] = {s: {} for s in new}
        for name in self.client.get_run(self.run_id).data.metrics:
            for m in self.client.get_metric_history(self.run_id, name):
                if m.step in by_step:
                    by_step[m.step][name] = m.value
        for step in new:
            self.echo(format_epoch(step, self.epochs, by_step[step], self.prefix, self.metric))
            self.printed.add(step)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # a transient store error must not kill training output
                continue

    def __enter__(self) -> EpochProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        # The last epoch, even while the store is busy (sqlite: "database is locked" while
        # another process writes): the CLI exits without waiting for this daemon thread, so
        # what is not printed now never is. Keep trying for ``final_s``, then say so.
        try:
            with_retry(self.poll, self.final_s, every_s=min(self.interval_s, 0.5))
        except Exception as err:
            self.echo(f"(epoch lines not read back from MLflow: {type(err).__name__}: {err})")
