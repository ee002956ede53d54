"""Tasks users train: each module exposes a ``Task`` (dataset splits + model builders).

A config names a task by registry name (a key of ``REGISTRY``) or by import path
``package.module:attr``; see ``accelab.tasks.resolve_task``.
"""

REGISTRY: dict[str, str] = {
    "digits": "trainables.digits:TASK",
    "pylm": "trainables.pylm:TASK",
}
