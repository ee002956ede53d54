"""``accelab report``: a sweep's table, frontier and recommendation from MLflow alone.

Only a finished sweep has a result: a failed or interrupted one is reported as such (with
its error), never as a frontier and a recommendation."""

from __future__ import annotations

from collections.abc import Callable

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from accelab.errors import UsageError
from accelab.sweep.summary import find_parent, summarize, targets_of
from accelab.sweep.table import format_table, target_lines
from accelab.tracking.client import ERROR_TAG, tracking_store
from accelab.tracking.runs import KIND_TAG

UNFINISHED = {"FAILED": "failed", "KILLED": "was interrupted"}


def sweep_of(client, run_id: str, what: str = "--run"):
    """The sweep parent run ``run_id``; a trial's or a training's id names its sweep."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UsageError(f"{what} {run_id}: no such MLflow run at {client.tracking_uri}") from None
    kind = run.data.tags.get(KIND_TAG)
    if kind == "sweep":
        return run
    parent = run.data.tags.get("mlflow.parentRunId")
    of = f" of sweep run {parent} (give that one)" if parent else ""
    raise UsageError(f"{what} {run_id}: a {kind or 'non-accelab'} run{of}, not a sweep")


def unfinished(client, parent, experiment: str) -> str | None:
    """Why ``parent`` has no result (failed, interrupted), naming the newest finished
    sweep of the experiment; None when it finished (or is still running)."""
    how = UNFINISHED.get(parent.info.status)
    if how is None:
        return None
    why = parent.data.tags.get(ERROR_TAG, "")
    text = (f"sweep {parent.info.run_name} (MLflow run {parent.info.run_id}) {how}"
            f"{': ' + why.splitlines()[0][:300] if why and why != 'interrupted' else ''}; "
            "it has no frontier or recommendation (continue it with accelab sweep CONFIG --resume)")  # fmt: skip
    done = client.search_runs(
        [parent.info.experiment_id],
        "tags.`accelab.kind` = 'sweep' and attributes.status = 'FINISHED'",
        max_results=1, order_by=["start_time DESC"],
    )  # fmt: skip
    if done:
        text += (
            f"; the newest finished sweep: accelab report {experiment} --run {done[0].info.run_id}"
        )
    return text


def report(
    experiment: str,
    tracking_uri: str | None,
    run_id: str | None,
    echo: Callable[[str], None] = print,
) -> None:
    client = MlflowClient(tracking_store(tracking_uri, "--tracking-uri", must_exist=True))
    parent = sweep_of(client, run_id) if run_id else find_parent(client, experiment)
    if why := unfinished(client, parent, experiment):
        raise UsageError(why)
    echo(f"sweep {parent.info.run_name} (MLflow run {parent.info.run_id}, {client.tracking_uri})")
    if parent.info.status == "RUNNING":
        echo("still running (or its driver was killed): a partial table, not a recommendation")
    others = [summarize(client, parent, key) for key, _ in targets_of(parent)[1:]]
    echo("\n".join([format_table(summarize(client, parent)), *target_lines(others)]))
