"""``accelab report``: a sweep's table, frontier and recommendation from MLflow alone."""

from __future__ import annotations

from collections.abc import Callable


def report(
    experiment: str,
    tracking_uri: str | None,
    run_id: str | None,
    echo: Callable[[str], None] = print,
) -> None:
    from mlflow.tracking import MlflowClient

    from accelab.sweep.summary import find_parent, summarize, targets_of
    from accelab.sweep.table import format_table, target_lines
    from accelab.tracking.client import tracking_store

    client = MlflowClient(tracking_store(tracking_uri, "--tracking-uri", must_exist=True))
    parent = find_parent(client, experiment, run_id)
    echo(f"sweep {parent.info.run_name} (MLflow run {parent.info.run_id}, {client.tracking_uri})")
    others = [summarize(client, parent, key) for key, _ in targets_of(parent)[1:]]
    echo("\n".join([format_table(summarize(client, parent)), *target_lines(others)]))
