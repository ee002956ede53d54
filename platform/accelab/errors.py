"""Errors that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


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
