"""How a started command ends early (#17), in-process on a real MLflow sqlite store:
SIGINT and SIGTERM both become ``Interrupted`` (130 / 143), an interrupted sweep's runs
end KILLED (finished trials stay FINISHED) and say what was kept, a failed one ends FAILED
with its error, and ``accelab report`` says so instead of showing a result."""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import sqlite3
import sys
import time
import types

import pytest
from mlflow.tracking import MlflowClient

from accelab import cli
from accelab.commands.report import unfinished
from accelab.commands.sweep import ended
from accelab.errors import Interrupted, catch_signals, inside_database_call, interruption


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def signal_round_trip(signum: int, out) -> None:
    """In a fresh interpreter: catch, receive ``signum``, report what accelab made of it."""
    catch_signals()
    try:
        signal.raise_signal(signum)
        out.put(("no Interrupted raised", None, None))
    except Interrupted as caught:
        remembered = interruption().signum  # remembered, for a library that swallowed it
        catch_signals()
        out.put((caught.exit_code, remembered, interruption()))


# a hang guard only: a spawned interpreter importing MLflow takes minutes on a loaded machine
HANG_S = 600


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_take_the_same_path(signum, code):
    # a spawned interpreter: a real signal to the pytest process itself segfaulted it after
    # OpenVINO/NNCF tests had run in it (captured output; not seen outside pytest)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=signal_round_trip, args=(signum, out))
    child.start()
    exit_code, remembered, after_reset = out.get(timeout=HANG_S)
    child.join(timeout=HANG_S)
    assert (exit_code, remembered, after_reset) == (code, signum, None)


def signal_inside_a_database_write(db: str, out) -> None:
    """In a fresh interpreter: a signal arrives while SQLAlchemy is inside a sqlite write;
    report where ``Interrupted`` was raised and whether another connection can write."""
    import sqlalchemy as sa
    from sqlalchemy import event

    engine = sa.create_engine(f"sqlite:///{db}")
    sent: list[int] = []

    def ctrl_c_once(*_):  # once: a second signal means "stop now" (no bookkeeping)
        if not sent:
            sent.append(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    event.listen(engine, "before_cursor_execute", ctrl_c_once)
    catch_signals()
    where = "nowhere"
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        where = "after the transaction"
        time.sleep(5)  # the deferred signal lands here
    except Interrupted:
        where = where if where != "nowhere" else "inside the transaction"
    try:
        other = sqlite3.connect(db, timeout=1)
        other.execute("INSERT INTO t VALUES (2)")  # "database is locked" if left open
        other.commit()
        out.put((where, other.execute("SELECT count(*) FROM t").fetchone()[0]))
    except sqlite3.Error as exc:
        out.put((where, repr(exc)))


def test_a_signal_inside_a_database_write_waits_for_it_to_end(tmp_path):
    """Raised inside MLflow's sqlite store, the interruption left the transaction open and
    the KILLED bookkeeping found the database locked (MLflow logged a traceback)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=signal_inside_a_database_write, args=(str(tmp_path / "d.db"), out))
    child.start()
    where, rows = out.get(timeout=HANG_S)
    child.join(timeout=HANG_S)
    assert (where, rows) == ("after the transaction", 2)


def test_frames_of_database_code_are_recognised():
    def database_frame():
        return sys._getframe()

    assert not inside_database_call(sys._getframe())
    fake = types.FunctionType(
        database_frame.__code__, {"__name__": "sqlalchemy.engine.base", "sys": sys}
    )
    assert inside_database_call(fake())


def test_the_cli_prints_one_line_with_the_resume_command(restore_signals, capsys):
    args = argparse.Namespace(command="sweep", config="my sweep.yaml", overrides=["a.b=1"])

    def interrupted_command(_):
        raise Interrupted(signal.SIGTERM).keeping("2 of 6 trial(s) finished, kept in MLflow run x")

    assert cli.run(interrupted_command, args) == 143
    err = capsys.readouterr().err.splitlines()
    assert err == ["accelab: interrupted; 2 of 6 trial(s) finished, kept in MLflow run x; "
                   "continue with: accelab sweep 'my sweep.yaml' a.b=1 --resume"]  # fmt: skip


def make_sweep(tmp_path):
    """A sweep parent with its baseline training (RUNNING), a finished trial, a running
    trial and the running fine-tuning run below it."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("exp")

    def run(parent=None, **tags):
        extra = {"mlflow.parentRunId": parent} if parent else {}
        return client.create_run(exp, tags={**tags, **extra}).info.run_id

    parent = run(**{"accelab.kind": "sweep"})
    ids = {
        "parent": parent,
        "baseline": run(parent, **{"accelab.kind": "train"}),
        "done": run(parent, **{"accelab.kind": "trial", "accelab.trial_id": "t_00000",
                               "accelab.status": "ok"}),
        "running": run(parent, **{"accelab.kind": "trial", "accelab.trial_id": "t_00001",
                                  "accelab.status": "running"}),
    }  # fmt: skip
    ids["finetuning"] = run(ids["running"], **{"accelab.kind": "train"})
    client.set_terminated(ids["done"], "FINISHED")
    return client, ids


def status(client, run_id):
    return client.get_run(run_id).info.status


def test_an_interrupted_sweep_ends_killed_keeping_its_finished_trials(tmp_path):
    client, ids = make_sweep(tmp_path)
    with pytest.raises(Interrupted) as caught:
        ended(client, client.tracking_uri, ids["parent"], Interrupted(signal.SIGINT), 3)
    assert caught.value.exit_code == 130 and caught.value.resumable
    assert caught.value.kept == (f"1 of 3 trial(s) finished (t_00000), kept in MLflow run "
                                 f"{ids['parent']}; nothing was registered")  # fmt: skip
    assert {k: status(client, v) for k, v in ids.items()} == {
        "parent": "KILLED", "baseline": "KILLED", "done": "FINISHED", "running": "KILLED",
        "finetuning": "KILLED"}  # fmt: skip
    assert client.get_run(ids["running"]).data.tags["accelab.status"] == "interrupted"
    parent = client.get_run(ids["parent"])
    assert "was interrupted; it has no frontier" in unfinished(client, parent, "exp")


def test_a_failed_sweep_ends_failed_with_its_error_and_report_says_so(tmp_path):
    client, ids = make_sweep(tmp_path)
    ended(client, client.tracking_uri, ids["parent"], RuntimeError("boom in finish"), 3)
    assert status(client, ids["parent"]) == "FAILED"
    assert status(client, ids["running"]) == "KILLED"  # nothing is left RUNNING
    parent = client.get_run(ids["parent"])
    assert parent.data.tags["accelab.error"] == "RuntimeError: boom in finish"
    assert "accelab.recommendation" not in parent.data.tags
    why = unfinished(client, parent, "exp")
    assert f"(MLflow run {ids['parent']}) failed: RuntimeError: boom in finish" in why
    assert "newest finished sweep" not in why  # there is none


def test_a_finished_sweep_is_reported_as_a_result(tmp_path):
    client, ids = make_sweep(tmp_path)
    client.set_terminated(ids["parent"], "FINISHED")
    assert unfinished(client, client.get_run(ids["parent"]), "exp") is None
