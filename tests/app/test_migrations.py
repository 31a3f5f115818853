"""The Alembic migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from app.db.migrate import downgrade_to_base, upgrade_to_head
from app.db.models import Base
from app.db.session import make_engine

TABLES = {"models", "jobs", "job_events", "artifacts"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    make_pg_database: Callable[[], str] = request.getfixturevalue("make_pg_database")
    return make_pg_database()


def test_upgrade_to_head_creates_tables_and_matches_models(empty_url: str) -> None:
    upgrade_to_head(empty_url)
    engine = make_engine(empty_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            drift = compare_metadata(context, Base.metadata)
        assert drift == [], f"models and migrations differ: {drift}"
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_everything(empty_url: str) -> None:
    upgrade_to_head(empty_url)
    downgrade_to_base(empty_url)
    engine = make_engine(empty_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade_to_head(empty_url)  # and back up again: the downgrade left nothing behind that blocks it


def test_upgrade_is_idempotent(empty_url: str) -> None:
    upgrade_to_head(empty_url)
    upgrade_to_head(empty_url)


def test_sqlite_engine_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) > 0
    finally:
        engine.dispose()


def test_alembic_cli_takes_the_url_from_database_url(make_pg_database: Callable[[], str]) -> None:
    """The compose migrate step: ``alembic upgrade head`` with only DATABASE_URL set (plain postgresql://)."""
    url = make_url(make_pg_database()).set(drivername="postgresql").render_as_string(hide_password=False)
    env = {k: v for k, v in os.environ.items() if k not in {"NNCOMPRESS_DATABASE_URL"}}
    root = Path(__file__).resolve().parents[2]
    alembic = str(Path(sys.executable).with_name("alembic"))
    for args in (["upgrade", "head"], ["check"]):
        done = subprocess.run(
            [alembic, *args], cwd=root, env={**env, "DATABASE_URL": url}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()
