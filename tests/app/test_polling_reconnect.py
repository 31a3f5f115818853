"""The polled reads skip the pool's pre-ping: a pooled connection PostgreSQL dropped (a restart,
``pg_terminate_backend``) fails the read itself, which runs once more on a new connection."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from core.db.session import make_engine, read_rows
from tests.app.factories import job_body, uploaded_mnist


def _terminate_other_sessions(url: str) -> None:
    """Ends every other session on the test's database, as a restart would, and waits until they are gone."""
    admin = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    others = "datname = current_database() AND pid <> pg_backend_pid()"
    try:
        with admin.connect() as conn:
            pids = conn.execute(text(f"SELECT pid FROM pg_stat_activity WHERE {others}")).scalars().all()
            assert pids, "the app holds no pooled connection to drop"
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM unnest(:pids) AS pid"), {"pids": pids})
            deadline = time.monotonic() + 10
            # pg_terminate_backend only signals: a query sent before the backend exits would still work.
            while conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"), {"pids": pids}
            ).scalar_one():
                assert time.monotonic() < deadline, f"backends {pids} outlived pg_terminate_backend"
                time.sleep(0.05)
    finally:
        admin.dispose()


def _errors(engine: Engine) -> list[tuple[bool, bool]]:
    """Records the engine's errors as (a lost connection, found by the pre-ping)."""
    seen: list[tuple[bool, bool]] = []

    def record(context: ExceptionContext) -> None:
        seen.append((context.is_disconnect, context.is_pre_ping))

    event.listen(engine, "handle_error", record)
    return seen


@pytest.fixture
def client(make_client: Callable[..., Any], make_settings: Any, pg_url: str) -> TestClient:
    return make_client(make_settings(database_url=pg_url))


def test_a_poll_on_a_connection_postgresql_dropped_is_answered(client: TestClient, pg_url: str) -> None:
    job = client.post("/v1/jobs", json=job_body(uploaded_mnist(client))).json()
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200  # the read pool now keeps a connection
    read_engine: Engine = client.app.state.read_engine  # type: ignore[attr-defined]
    assert read_engine is not client.app.state.engine  # type: ignore[attr-defined]
    errors = _errors(read_engine)

    _terminate_other_sessions(pg_url)
    poll = client.get(f"/v1/jobs/{job['id']}")
    assert poll.status_code == 200 and poll.json() == job
    # The read found the dead connection itself (no pre-ping) and was run again once.
    assert errors == [(True, False)]

    _terminate_other_sessions(pg_url)
    page = client.get("/v1/jobs")
    assert page.status_code == 200 and [j["id"] for j in page.json()["items"]] == [job["id"]]
    assert errors == [(True, False)] * 2


def test_a_write_on_a_connection_postgresql_dropped_is_answered(client: TestClient, pg_url: str) -> None:
    job = client.post("/v1/jobs", json=job_body(uploaded_mnist(client))).json()
    errors = _errors(client.app.state.engine)  # type: ignore[attr-defined]
    _terminate_other_sessions(pg_url)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    # The write engine's pre-ping found the dead connection before any statement was sent on it.
    assert errors and all(pre_ping for _, pre_ping in errors), errors


def test_a_read_that_fails_otherwise_is_not_run_again(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        with engine.connect() as connection, pytest.raises(OperationalError, match="no such table"):
            read_rows(connection, text("SELECT * FROM no_such_table"))
    finally:
        engine.dispose()
    assert statements == ["SELECT * FROM no_such_table"]
