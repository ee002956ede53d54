"""``accelab validate``: check experiment files without running anything."""

from __future__ import annotations

from collections.abc import Callable

from accelab.errors import UsageError
from accelab.preflight import load_config


def validate(files: list[str], overrides: list[str], echo: Callable[[str], None] = print) -> None:
    """Every file is checked (and every sweep point expanded); all problems at once."""
    problems: list[str] = []
    for path in files:
        try:
            load_config(path, overrides)
            echo(f"ok: {path}")
        except UsageError as exc:
            problems += exc.messages
    if problems:
        raise UsageError(problems)
