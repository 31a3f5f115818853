"""Fixtures of the database tests: a database with no schema yet, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    make_pg_database: Callable[[], str] = request.getfixturevalue("make_pg_database")
    return make_pg_database()
