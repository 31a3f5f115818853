"""Fixtures shared by the service tests: real PostgreSQL and SQLite databases, settings, clients.

PostgreSQL is the one on 127.0.0.1 (``NNCOMPRESS_TEST_PG_DSN`` overrides the server DSN). Each test
session gets a fresh database of its own; an unreachable server FAILS the tests that need it.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

PG_SERVER_DSN = os.environ.get("NNCOMPRESS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = ("webhook_deliveries", "artifacts", "job_events", "jobs", "models", "api_keys", "tenants")

# -- tiers -------------------------------------------------------------------------------------------
# The default run (``pytest``) is the fast tier: ``-m "not slow and not service and not browser"`` in
# pyproject's addopts. ``scripts/test.sh`` (CI) passes ``-m ""`` and runs every tier. Tiers are given
# here by what a test uses, so a new test lands in the right one without remembering a decorator.

# Fixtures that need PostgreSQL or Redis (``item.fixturenames`` is transitive: a fixture built on
# one of these counts too). ``db_url`` needs PostgreSQL only for its ``postgresql`` parameter.
SERVICE_FIXTURES = frozenset(
    {
        "pg_url",
        "pg_session_url",
        "make_pg_database",
        "pg_jobs",
        "redis_server",
        "celery_settings",
        "start_worker",
    }
)
# Tests that talk to the shared Redis on 127.0.0.1:6379 (each on a database number of its own, so they
# may run in parallel with each other) without a fixture that says so.
SHARED_REDIS_TESTS = (
    "tests/app/test_app_lifecycle.py::test_distributed_mode_does_not_migrate",
    "tests/app/test_observability.py::test_distributed_metrics_read_the_broker_queues_and_worker_beats",
    "tests/app/test_tenancy.py::test_rate_limit_in_redis_is_shared_by_api_processes",
)
# Fixtures that start real job processes, workers or servers and wait for real jobs: seconds to
# minutes each on a loaded 2-core machine.
SLOW_FIXTURES = frozenset({"start_worker"})
BROWSER_MODULES = frozenset({"tests/test_dashboard.py"})
# Engine modules that compress or train whole model zoos: 57% of the default tier's time in a full run
# on a loaded 2-core machine (junit times, 2026-12-05), 150-490 s each.
SLOW_MODULES = frozenset(
    {
        "tests/nncompress/speedup/test_zoo_speedup.py",
        "tests/nncompress/test_scheduled.py",
        "tests/nncompress/test_pipeline_training.py",
        "tests/nncompress/io/test_onnx_import_zoo.py",
        "tests/nncompress/finetune/test_finetune.py",
        "tests/nncompress/test_zoo_end_to_end.py",
        "tests/nncompress/test_norm_families.py",
    }
)


def _uses_postgresql(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("db_url") == "postgresql"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks each test's tiers, and keeps tests that share a module-scoped fixture on one xdist worker."""
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        names = set(getattr(item, "fixturenames", ()))
        if names & SERVICE_FIXTURES or _uses_postgresql(item) or item.nodeid.startswith(SHARED_REDIS_TESTS):
            item.add_marker(pytest.mark.service)
        if names & SLOW_FIXTURES or path in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if path in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
        # Under ``--dist loadgroup`` a module- or class-scoped fixture (a trained model, a started
        # server) would be built once per xdist worker that gets one of its tests; one group per such
        # module builds it once. Everything else is distributed test by test.
        fixturedefs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        if any(d.scope in ("module", "class", "package") for defs in fixturedefs.values() for d in defs):
            item.add_marker(pytest.mark.xdist_group(path))


def _pg_admin(statement: str) -> None:
    import psycopg

    try:
        with psycopg.connect(PG_SERVER_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(statement)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_SERVER_DSN} is required and did not answer: {exc}")


def _sqlalchemy_url(database: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(PG_SERVER_DSN).set(drivername="postgresql+psycopg", database=database)
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def make_pg_database() -> Iterator[Callable[[], str]]:
    """Creates empty PostgreSQL databases (dropped at the end of the session); returns their URLs."""
    created: list[str] = []

    def create() -> str:
        name = f"nncompress_test_{uuid.uuid4().hex[:12]}"
        _pg_admin(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _sqlalchemy_url(name)

    yield create
    for name in created:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_session_url(make_pg_database: Callable[[], str]) -> str:
    """One PostgreSQL database per test session, migrated to head."""
    from core.db.migrate import upgrade_to_head

    url = make_pg_database()
    upgrade_to_head(url)
    return url


@pytest.fixture
def pg_url(pg_session_url: str) -> str:
    """The session's PostgreSQL database, emptied before the test (committed data is visible to workers)."""
    from sqlalchemy import text

    from core.db.session import make_engine

    engine = make_engine(pg_session_url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return pg_session_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file (WAL) in the test's tmp folder, migrated to head."""
    from core.db.migrate import upgrade_to_head

    url = f"sqlite:///{tmp_path / 'nncompress.db'}"
    upgrade_to_head(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def make_settings(tmp_path: Path, sqlite_url: str) -> Callable[..., Any]:
    """Builds ``Settings`` on the test's SQLite database and storage folder; keywords override."""
    from core.settings import Settings

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": sqlite_url, "storage_dir": tmp_path / "storage"}
        return Settings(**{**values, **overrides})

    return build


class RecordingDispatcher:
    """A dispatcher that runs nothing: it records enqueued ids, so API tests see jobs stay queued.

    ``check_error`` makes ``check()`` raise, as an unreachable broker would.
    """

    def __init__(self) -> None:
        self.enqueued: list[str] = []
        self.started = self.stopped = False
        self.check_error: Exception | None = None

    def enqueue(self, job_id: str, queue: str | None = None) -> None:
        self.enqueued.append(job_id)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def check(self) -> None:
        if self.check_error is not None:
            raise self.check_error


@pytest.fixture
def make_client(make_settings: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Builds a started ``TestClient`` for ``create_app(settings, dispatcher=...)``.

    With no settings, ``make_settings()`` is used; with no dispatcher, a :class:`RecordingDispatcher`
    (``client.app.state.dispatcher``). Pass ``dispatcher=`` a real one to run jobs.
    """
    from fastapi.testclient import TestClient

    from app.main import create_app

    clients: list[TestClient] = []

    def build(settings: Any = None, *, dispatcher: Any = None) -> TestClient:
        app = create_app(settings or make_settings(), dispatcher=dispatcher or RecordingDispatcher())
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def make_api_key() -> Callable[..., str]:
    """Creates an API key for a tenant (created if new) on ``settings``' database; returns the key.

    Keyword limits (``max_concurrent_jobs``, ``max_upload_bytes``, ``requests_per_minute``) are set on
    the tenant.
    """
    from app.auth.tenants import create_key
    from core.db.session import make_engine, make_session_factory

    def create(settings: Any, tenant: str = "team-a", **limits: int) -> str:
        engine = make_engine(settings.database_url)
        try:
            with make_session_factory(engine)() as session:
                created = create_key(session, tenant_name=tenant, pepper=settings.api_key_pepper)
                for name, value in limits.items():
                    setattr(created.tenant, name, value)
                session.commit()
                return created.key
        finally:
            engine.dispose()

    return create


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers with the next scripted status."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            rec.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(rec.statuses.pop(0) if rec.statuses else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    rec.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=rec.server.serve_forever, daemon=True)
    thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()
