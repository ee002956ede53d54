"""Resolve a trainable task by registry name or by import path ``package.module:attr``.

Resolving only imports the named module (within ``ACCELAB_IMPORT_TIMEOUT`` seconds, 60 by
default) and reads the attribute: it never calls anything, so ``sys:exit`` or ``os:abort``
are reported as "not a Task" instead of being run. Modules are found in the working
directory, on ``PYTHONPATH``, or as installed packages.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import threading
from collections.abc import Iterator

from accelab.errors import UsageError
from trainables import REGISTRY
from trainables.base import Task

WHERE = "modules are found in the working directory, on PYTHONPATH, or as installed packages"


class UnknownTrainable(LookupError):
    pass


class ImportTimeout(Exception):
    pass


def import_timeout_s() -> float:
    """``ACCELAB_IMPORT_TIMEOUT`` in seconds (60 when unset); a value that is not a positive
    number is refused rather than silently replaced."""
    raw = os.environ.get("ACCELAB_IMPORT_TIMEOUT", "").strip() or "60"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise UsageError(
            f"ACCELAB_IMPORT_TIMEOUT: {raw!r} is not a positive number of seconds (default 60)"
        )
    return seconds


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``ImportTimeout`` in this (main) thread after ``seconds``; a no-op elsewhere."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise ImportTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def import_module(name: str):
    timeout = import_timeout_s()
    try:
        with time_limit(timeout):
            return importlib.import_module(name)
    except ImportTimeout:
        raise UnknownTrainable(
            f"importing trainable module {name!r} took longer than {timeout:g} s "
            "(ACCELAB_IMPORT_TIMEOUT): does it block or do heavy work at import?"
        ) from None
    except ImportError as exc:
        raise UnknownTrainable(
            f"cannot import trainable module {name!r}: {exc} ({WHERE})"
        ) from None
    except (Exception, SystemExit) as exc:
        raise UnknownTrainable(
            f"importing trainable module {name!r} raised {type(exc).__name__}: {exc}"
        ) from None


def resolve_task(name: str) -> Task:
    """Return the ``Task`` named ``name`` (e.g. ``digits`` or ``my_pkg.tasks:TASK``)."""
    target = REGISTRY.get(name, name)
    if ":" not in target:
        raise UnknownTrainable(
            f"unknown trainable {name!r}; registered: {sorted(REGISTRY)}, or give 'package.module:attr'"
        )
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UnknownTrainable(f"{target!r}: expected 'package.module:attr'")
    module = import_module(module_name)
    task = getattr(module, attr, None)
    if task is None:
        raise UnknownTrainable(f"module {module_name!r} has no attribute {attr!r}")
    if not isinstance(task, Task):
        raise UnknownTrainable(
            f"{target} is a {type(task).__name__}, not a trainables.base.Task "
            "(accelab reads the attribute and never calls it)"
        )
    return task


def model_of(task: Task, trainable):
    """A fresh ``trainable.model`` of an already resolved ``task`` (``trainable``: a
    config's ``trainable`` section or its dict)."""
    get = trainable.get if isinstance(trainable, dict) else lambda k, d=None: getattr(trainable, k)
    return task.build_model(get("model"), **(get("model_args", {}) or {}))


def build_model(trainable):
    """The configured model, resolving its task first (where no task is at hand)."""
    name = trainable["name"] if isinstance(trainable, dict) else trainable.name
    return model_of(resolve_task(name), trainable)
