"""The writes of a submit: a new queued job with its ``created`` event, within the tenant's limit.

On PostgreSQL they are one statement in autocommit, a call of ``nncompress_submit_job`` (migration
0007): the function locks the tenant row, counts, and inserts both rows, so a submit costs the API one
round trip instead of a transaction's four. SQLite, which has no stored functions, runs Core statements
built once (not the ORM: its unit of work was a third of a submit's CPU) in the caller's transaction.
A new job queues no webhook or MLflow message: "created" is not an event either outbox sends
(tests/app/test_submit_insert.py holds that).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.exc import DBAPIError

from core.db.models import EventType, Job, JobEvent, Tenant
from core.db.session import read_tuples
from core.errors import TooManyJobs, Unauthorized

# The job columns a submit writes; the others are NULL until a worker claims the job.
JOB_COLUMNS = (
    "id", "tenant_id", "model_id", "status", "progress", "spec", "device", "queue", "idempotency_key",
    "request_hash", "attempt", "max_attempts", "cancel_requested", "webhook", "mlflow", "created_at",
    "updated_at",
)  # fmt: skip
CREATED_MESSAGE = "job queued"

# SQLite's lock is its one write lock, taken at the INSERT: FOR UPDATE is left out there.
_UNFINISHED = select(Tenant.unfinished_jobs).where(Tenant.id == bindparam("tenant_id"))
_INSERT_JOB = insert(Job)
_INSERT_EVENT = insert(JobEvent)

# The submit function's answer: (event id, unfinished jobs), both NULL without a tenant row.
_PG_SUBMIT = "SELECT event_id, unfinished FROM nncompress_submit_job(%(job)s, %(limit)s, %(message)s)"


def _job_document(row: dict[str, Any]) -> str:
    """The job's row as the JSON document the function reads with ``json_populate_record``."""
    return json.dumps(row, default=_iso, separators=(",", ":"))


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value a submit writes")


def insert_queued_job(connection: Connection, row: dict[str, Any], *, limit: int) -> None:
    """Inserts the job ``row`` (every one of :data:`JOB_COLUMNS`) and its ``created`` event, and
    refuses it (:class:`TooManyJobs`, nothing written) when the tenant's other unfinished jobs are
    already at ``limit``.

    On PostgreSQL ``connection`` is in autocommit (``make_read_engine``'s): the one statement is the
    whole transaction, and a connection found dead runs it once more (``read_tuples``). Should the
    first try have committed before its connection died, the second one fails on the job's primary
    key, which the caller answers by finding the job (``app.services.jobs``). Elsewhere the caller
    commits, or rolls back on an error: SQLite takes its one write lock at the first INSERT, so it
    reads the count before inserting and keeps that lock short (benchmarks/api_load.py, embedded, 8
    connections: p99 445 ms counting after the INSERT, 294 before).
    """
    if connection.dialect.name == "postgresql":
        event_id, unfinished = _call_submit_function(connection, row, limit)
        if event_id is None:
            _check_room(row, unfinished, limit)
            raise RuntimeError(f"nncompress_submit_job inserted nothing with {unfinished} of {limit} jobs")
        return
    _check_room(row, connection.execute(_UNFINISHED, row).scalar(), limit)
    connection.execute(_INSERT_JOB, row)
    event = {
        "job_id": row["id"],
        "at": row["created_at"],
        "type": EventType.CREATED.value,
        "status": row["status"],
        "stage": None,
        "progress": row["progress"],
        "message": CREATED_MESSAGE,
    }
    connection.execute(_INSERT_EVENT, event)


def _call_submit_function(
    connection: Connection, row: dict[str, Any], limit: int
) -> tuple[int | None, int | None]:
    params = {"job": _job_document(row), "limit": limit, "message": CREATED_MESSAGE}
    try:
        ((event_id, unfinished),) = read_tuples(connection, _PG_SUBMIT, params)
    except connection.dialect.loaded_dbapi.Error as error:  # as SQLAlchemy's, like any statement's
        raise DBAPIError.instance(_PG_SUBMIT, params, error, connection.dialect.loaded_dbapi.Error) from error
    return event_id, unfinished


def _check_room(row: dict[str, Any], unfinished: int | None, limit: int) -> None:
    """Raises Unauthorized without a tenant row (removed meanwhile), TooManyJobs at the limit."""
    if unfinished is None:
        raise Unauthorized(
            f"tenant {row['tenant_id']} no longer exists", headers={"WWW-Authenticate": "Bearer"}
        )
    if unfinished >= limit:
        raise TooManyJobs(
            f"this tenant has {unfinished} queued or running jobs, its limit is {limit}; "
            "wait for one to finish or cancel one",
            errors=[{"unfinished": unfinished, "limit": limit}],
        )
