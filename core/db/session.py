"""Engine and session factories; SQLite gets WAL, a busy timeout and foreign keys."""

from __future__ import annotations

import contextlib
import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from pydantic_core import from_json
from sqlalchemy import Connection, Engine, Executable, Row, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Builds an engine for ``url``; SQLite files get their parent folder created.

    Server databases get ``pool_pre_ping`` (a round trip per checkout that finds a connection the
    server dropped) unless ``kwargs`` says otherwise (:func:`make_read_engine`).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, **{"pool_pre_ping": True, **kwargs})
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        **kwargs,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


_WRITERS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_WRITERS_GUARD = threading.Lock()


def writer_turn(engine: Engine) -> AbstractContextManager[object]:
    """On SQLite, a process-wide lock for a short write transaction on ``engine``; elsewhere nothing.

    SQLite has one write lock, and a connection that finds it taken sleeps in its busy handler, in
    steps of up to 100 ms, whether or not the writer has finished meanwhile. Threads of one process
    that queue on this lock instead are woken as soon as the writer before them is done: embedded, 8
    connections submitting, p99 135 ms without it (benchmarks/api_load.py). Other processes (a second
    uvicorn worker) still meet at SQLite's own lock.
    """
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    with _WRITERS_GUARD:
        lock = _WRITERS.get(engine)
        if lock is None:
            lock = _WRITERS[engine] = threading.Lock()
    return lock


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; busy_timeout makes a writer wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (responses are built after it)."""
    return sessionmaker(engine, expire_on_commit=False)


def make_read_engine(engine: Engine, **kwargs: Any) -> Engine:
    """The engine for the polled reads (:mod:`app.services.job_reads`) and a submit's one-statement
    write (:mod:`app.services.job_insert`), next to ``engine`` (the other writes).

    On PostgreSQL it has its own pool, in autocommit and without pre-ping, so a poll is one round
    trip instead of four (the pre-ping, BEGIN, the query, ROLLBACK when the connection goes back).
    Measured: 300 µs instead of 410 µs of API CPU per poll for the autocommit; without the pre-ping,
    ``read_job`` on PostgreSQL in one process, alternating with the pre-pinging engine (500 reads a
    round): 300 -> 190-220 µs of CPU and 740-910 -> 510-750 µs of wall time a read. A connection
    the server dropped is found by the read itself instead, which :func:`read_rows` runs once more.
    SQLite's driver begins no transaction for a SELECT and has no server to lose, and an in-memory
    database lives on one connection, so ``engine`` itself is returned there.

    Its connections parse ``json`` columns with :func:`_loads` (pydantic's parser) instead of
    psycopg's ``json.loads``: a page of jobs parses three documents a job, and that was the largest
    part of listing them.

    Args:
        engine: the application's engine, from :func:`make_engine`.
        kwargs: passed to ``create_engine`` (the pool's size).

    Returns:
        The engine to read from; dispose of it with ``engine`` when it is not ``engine``.
    """
    if engine.dialect.name == "sqlite":
        return engine
    read_engine = make_engine(
        engine.url.render_as_string(hide_password=False),
        pool_pre_ping=False,
        isolation_level="AUTOCOMMIT",
        **kwargs,
    )
    if read_engine.dialect.driver == "psycopg":
        event.listen(read_engine, "connect", _parse_json_fast)
    return read_engine


def _parse_json_fast(dbapi_connection: Any, _record: Any) -> None:
    from psycopg.types.json import set_json_loads  # only a PostgreSQL deployment has psycopg

    set_json_loads(_loads, dbapi_connection)


def _loads(data: str | bytes) -> Any:
    """A JSON document as ``json.loads`` reads it, 2-8 times faster (pydantic-core's parser).

    Both read JSON to the same values (big integers, NaN and infinity included); a document the
    faster parser refuses (a lone surrogate escape, which ``json.loads`` accepts) is read by
    ``json.loads``, so no stored value stops being readable.
    """
    try:
        return from_json(data)
    except ValueError:
        return json.loads(data)


def read_rows(
    connection: Connection, statement: Executable, params: Mapping[str, Any] | None = None
) -> Sequence[Row[Any]]:
    """The rows of a read, run once more on a new connection if the first one was found dead.

    Without a pre-ping a pooled connection the server dropped (PostgreSQL restarted, an idle
    timeout, ``pg_terminate_backend``) fails the first statement sent on it. SQLAlchemy then
    invalidates it and every connection the pool made before it, so the second try connects
    afresh. Only for connections in autocommit (:func:`make_read_engine`): a transaction lost with
    the connection would not be retried, only its last statement.

    Args:
        connection: a connection of the read engine.
        statement: a SELECT.
        params: its bound parameters.

    Returns:
        All its rows.
    """
    try:
        return connection.execute(statement, params).all()
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    connection.rollback()  # ends the invalidated connection's (empty) transaction, so it may reconnect
    return connection.execute(statement, params).all()


def read_tuples(connection: Connection, sql: str, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
    """PostgreSQL only: the rows of a read as psycopg's plain tuples, bypassing SQLAlchemy's execute.

    For the polled reads: SQLAlchemy reads ``cursor.description`` on every execute (psycopg builds a
    column object per column for it) and wraps each row in a ``Row``; here psycopg only loads the
    values. So nothing is converted beyond what psycopg does: ``sql`` selects plain columns
    (``pyformat`` parameters) and the caller converts what a column type would have (time zones).

    Like :func:`read_rows`, a connection the server dropped is noticed and the read runs once more:
    the statement then goes through SQLAlchemy, which finds the lost connection as it does for any
    statement (invalidating it and the pool's older ones), and runs it again on a new one. Where
    the engine has event listeners (tracing, a test counting statements) SQLAlchemy runs it too,
    so that they see it.

    Args:
        connection: a connection of the read engine (:func:`make_read_engine`), in autocommit.
        sql: a SELECT in the driver's own dialect.
        params: its bound parameters.

    Returns:
        All its rows, as tuples.
    """
    if not (connection._has_events or connection.engine._has_events):
        driver = connection.connection.driver_connection
        try:
            with driver.cursor() as cursor:  # type: ignore[union-attr]
                cursor.execute(sql, params)
                return cursor.fetchall()  # type: ignore[no-any-return]
        except Exception:
            if not driver.closed:  # type: ignore[union-attr]
                raise
    try:
        return connection.exec_driver_sql(sql, params).all()  # type: ignore[arg-type]
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    connection.rollback()
    return connection.exec_driver_sql(sql, params).all()  # type: ignore[arg-type]
