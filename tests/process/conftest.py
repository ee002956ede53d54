"""Process-level tests: each starts real processes (a local Ray, a ``ray start --head``
cluster, an ``mlflow server``, Chromium, or the ``accelab`` CLI in a subprocess).

Every test here carries the ``ray`` marker, so ``pytest -m "not ray"`` (= ``tests/unit``)
is the fast inner loop and ``pytest tests`` runs everything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.ray)
