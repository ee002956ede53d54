"""Errors raised by the compression primitives."""

from __future__ import annotations


class CompressionError(ValueError):
    """A compression setting is impossible for this model (e.g. it would remove a whole layer)."""
