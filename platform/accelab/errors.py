"""Errors that the CLI turns into a one-line message: exit code 2 for bad input, 130/143
for an interruption (SIGINT/SIGTERM)."""

from __future__ import annotations

import os
import signal
import threading


class UsageError(Exception):
    """Bad input from the user (config, override, file, resources). Exit code 2.

    ``messages`` holds one line per problem, each naming the file and the dotted key.
    """

    def __init__(self, messages: str | list[str]):
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        super().__init__("\n".join(self.messages))


class ConfigError(UsageError):
    """The experiment YAML or a key=value override is invalid."""


class ResourceError(UsageError):
    """The requested workers can never be placed on the cluster."""


def collect(*checks):
    """Run every check; return their results, or raise one ``UsageError`` with all the
    problems they found (so that the user fixes them in one pass)."""
    results, problems = [], []
    for check in checks:
        try:
            results.append(check())
        except UsageError as exc:
            results.append(None)
            problems += exc.messages
    if problems:
        raise UsageError(problems)
    return results


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM reached the driver. The CLI exits 128 + ``signum`` (130,
    143) with one line: ``kept`` (what the interrupted command kept, and where) and, when
    ``resumable``, how to continue with ``--resume``."""

    def __init__(self, signum: int = signal.SIGINT, kept: str = "", resumable: bool = False):
        self.signum, self.kept, self.resumable = signum, kept, resumable
        super().__init__(kept)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def keeping(self, kept: str, resumable: bool = True) -> Interrupted:
        return Interrupted(self.signum, kept, resumable)


_received: list[int] = []  # the signals that reached this process, in order

# Raising inside a database call (MLflow's SQLAlchemy store on sqlite) leaves its
# transaction open: the bookkeeping that follows (runs marked KILLED) then finds the
# database locked, and MLflow logs the traceback. Such a call is short, so the signal is
# delivered again a moment later, once the call is over.
DATABASE_MODULES = ("sqlalchemy.", "sqlite3", "mlflow.store.")
DEFER_S = 0.05


def inside_database_call(frame) -> bool:
    """True if ``frame`` (where a signal interrupted the main thread) or a caller of it
    runs code of a database driver or MLflow's store."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(DATABASE_MODULES):
            return True
        frame = frame.f_back
    return False


def _on_signal(signum: int, frame) -> None:
    if _received:  # a second signal: the user insists, stop now without the bookkeeping
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if inside_database_call(frame):
        later = threading.Timer(DEFER_S, os.kill, (os.getpid(), signum))
        later.daemon = True
        later.start()
        return
    _received.append(signum)
    raise Interrupted(signum)


_caught: list[bool] = []  # whether this process (the CLI) asked for catch_signals


def catch_signals() -> None:
    """SIGINT and SIGTERM both raise ``Interrupted`` in the main thread, so that a Ctrl-C,
    a ``kill`` and a scheduler's stop take the same path: runs marked KILLED, nothing
    shipped, one line saying how to resume. Libraries that install their own SIGINT handler
    inside a call (Ray Tune, Ray Train) are told not to (see ``sweep.tune``, ``training``)."""
    _received.clear()
    _caught[:] = [True]
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)


def catch_signals_again() -> None:
    """After ``ray.init``: Ray's driver start-up installs its own SIGTERM handler (it logs
    and exits at once); take SIGTERM back where the CLI caught the signals."""
    if _caught and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _on_signal)


def interruption(exc: BaseException | None = None) -> Interrupted | None:
    """The interruption behind ``exc``, or the one a library swallowed (a signal arrived
    while it ran and it returned normally): None when the process was not interrupted."""
    if isinstance(exc, Interrupted):
        return exc
    if isinstance(exc, KeyboardInterrupt) or _received:
        return Interrupted(_received[0] if _received else signal.SIGINT)
    return None
