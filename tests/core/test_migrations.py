"""The Alembic migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from core.db.migrate import downgrade_to_base, upgrade_to_head
from core.db.models import Base
from core.db.session import make_engine

TABLES = {"models", "jobs", "job_events", "artifacts"}


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


def test_0002_moves_existing_rows_to_the_default_tenant_and_keeps_their_events(empty_url: str) -> None:
    # On SQLite the batch rebuild of ``jobs`` would cascade-delete events and artifacts if foreign keys
    # were on during the migration (migrations/env.py turns them off); existing rows must survive.
    from alembic import command
    from sqlalchemy import text

    from core.db.migrate import alembic_config

    command.upgrade(alembic_config(empty_url), "0001")
    engine = make_engine(empty_url)
    now = "2026-01-01 00:00:00"
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO models (id, sha256, size_bytes, format, filename, storage_key, created_at) "
                    "VALUES ('m1', :h, 1, 'safetensors', 'm', 'k', :now)"
                ),
                {"h": "0" * 64, "now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO jobs (id, model_id, status, progress, spec, device, queue, attempt, "
                    "max_attempts, cancel_requested, created_at, updated_at, idempotency_key) VALUES "
                    "('j1', 'm1', 'succeeded', 100, '{}', 'cpu', 'cpu', 1, 3, false, :now, :now, 'k1')"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO job_events (job_id, at, type, status) VALUES ('j1', :now, 'succeeded', 's')"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO artifacts (id, job_id, name, sha256, size_bytes, media_type, storage_key, "
                    "created_at) VALUES ('a1', 'j1', 'report.json', :h, 2, 'application/json', 'k', :now)"
                ),
                {"h": "0" * 64, "now": now},
            )
        command.upgrade(alembic_config(empty_url), "0002")
        with engine.connect() as conn:
            (default_id,) = conn.execute(text("SELECT id FROM tenants WHERE name = 'default'")).one()
            assert conn.execute(text("SELECT tenant_id FROM models")).scalar_one() == default_id
            assert conn.execute(text("SELECT tenant_id FROM jobs")).scalar_one() == default_id
            assert conn.execute(text("SELECT count(*) FROM job_events")).scalar_one() == 1
            assert conn.execute(text("SELECT count(*) FROM artifacts")).scalar_one() == 1
    finally:
        engine.dispose()
