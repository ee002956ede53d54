"""Resolve a trainable task by registry name or by import path ``package.module:attr``."""

from __future__ import annotations

import importlib

from trainables import REGISTRY
from trainables.base import Task


class UnknownTrainable(LookupError):
    pass


def resolve_task(name: str) -> Task:
    """Return the ``Task`` named ``name`` (e.g. ``digits`` or ``my_pkg.tasks:TASK``)."""
    target = REGISTRY.get(name, name)
    if ":" not in target:
        raise UnknownTrainable(
            f"unknown trainable {name!r}; registered: {sorted(REGISTRY)}, or give 'package.module:attr'"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownTrainable(f"cannot import trainable module {module_name!r}: {exc}") from None
    task = getattr(module, attr, None)
    if task is None:
        raise UnknownTrainable(f"module {module_name!r} has no attribute {attr!r}")
    if callable(task) and not isinstance(task, Task):
        task = task()
    if not isinstance(task, Task):
        raise UnknownTrainable(f"{target} is a {type(task).__name__}, not a trainables.base.Task")
    return task
