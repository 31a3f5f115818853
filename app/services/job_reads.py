"""Reading jobs for the polled endpoints (one job, a page of jobs) with Core queries, not the ORM.

Clients poll these in a loop, so their cost per request is the API's capacity. Measured on this
2-core machine (benchmarks/api_load.py, CPU per read of one job with its artifacts): the ORM query
with ``joinedload`` took 400 µs on SQLite and 900 µs on PostgreSQL; the same outer join in Core,
rows read into :class:`JobRecord`, 60 and 300 µs. Writes stay in the ORM (``app.services.jobs``).

The connections come from the read engine (:func:`core.db.session.make_read_engine`: autocommit, no
pre-ping), so every statement goes through :func:`core.db.session.read_rows` (SQLite) or
:func:`core.db.session.read_tuples` (PostgreSQL), which run it once more when the pooled connection
turns out to be dead. On PostgreSQL the statements, compiled once, go to psycopg directly and come
back as tuples: SQLAlchemy's execute and its ``Row`` objects were a third of a poll's CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from functools import cache, lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect, Select, and_, any_, bindparam, or_, select

from app.services.pagination import decode_cursor, encode_cursor
from core.db.models import Artifact, Job
from core.db.session import read_rows, read_tuples
from core.db.types import is_id
from core.errors import NotFound

_JOBS = Job.__table__
_ARTIFACTS = Artifact.__table__
# What the API shows of a job (app.schemas.jobs.job_out); lease, idempotency and hash columns are not read.
_JOB_COLUMNS = tuple(
    _JOBS.c[name]
    for name in (
        "id", "status", "stage", "progress", "model_id", "spec", "device", "queue", "error_type",
        "error_message", "metrics", "result", "attempt", "max_attempts", "cancel_requested", "webhook",
        "mlflow", "created_at", "started_at", "finished_at", "updated_at",
    )
)  # fmt: skip
_ARTIFACT_COLUMNS = (
    _ARTIFACTS.c.job_id,
    _ARTIFACTS.c.name,
    _ARTIFACTS.c.size_bytes,
    _ARTIFACTS.c.sha256,
    _ARTIFACTS.c.media_type,
)


# Built once: constructing the statement (and its cache key) per poll cost more than running it.
_READ_JOB = (
    select(*_JOB_COLUMNS, *(c.label(f"artifact_{c.name}") for c in _ARTIFACT_COLUMNS[1:]))
    .select_from(_JOBS.outerjoin(_ARTIFACTS, _ARTIFACTS.c.job_id == _JOBS.c.id))
    .where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.tenant_id == bindparam("tenant_id"))
    .order_by(_ARTIFACTS.c.name)
)


# Named tuples rather than frozen dataclasses: a page builds 20 of them, and a frozen dataclass sets
# each of its 22 fields through object.__setattr__ (3-4 µs a job; a named tuple is one tuple).
class ArtifactRecord(NamedTuple):
    name: str
    size_bytes: int
    sha256: str
    media_type: str


class JobRecord(NamedTuple):
    """The columns of a job the API shows, with its artifacts (by name); read-only."""

    id: str
    status: str
    stage: str | None
    progress: float
    model_id: str
    spec: dict[str, Any]
    device: str
    queue: str
    error_type: str | None
    error_message: str | None
    metrics: dict[str, Any] | None
    result: dict[str, Any] | None
    attempt: int
    max_attempts: int
    cancel_requested: bool
    webhook: dict[str, Any] | None
    mlflow: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    artifacts: tuple[ArtifactRecord, ...] = ()

    @classmethod
    def of(cls, row: Sequence[Any], artifacts: Sequence[ArtifactRecord], *, utc: bool) -> JobRecord:
        """The job of a row whose first values are :data:`_JOB_COLUMNS`, in that order.

        ``utc``: the timestamps are aware UTC already (SQLAlchemy's ``UTCDateTime`` read them);
        otherwise they are psycopg's, in the session's time zone, and converted here as it would.
        """
        values = list(row[:_JOB_COLUMN_COUNT])
        if not utc:
            for i in _TIMESTAMPS:
                if values[i] is not None:
                    values[i] = values[i].astimezone(timezone.utc)
        return cls(*values, tuple(artifacts))  # type: ignore[call-arg]  # (mypy cannot count *values)


_JOB_COLUMN_COUNT = len(_JOB_COLUMNS)
_TIMESTAMPS = tuple(i for i, c in enumerate(_JOB_COLUMNS) if c.name.endswith("_at"))


def _rows(connection: Connection, statement: Select[Any], params: dict[str, Any]) -> Sequence[Sequence[Any]]:
    dialect = connection.dialect
    if dialect.name == "postgresql":
        return read_tuples(connection, _compiled(statement, dialect), params)
    return read_rows(connection, statement, params)


# Keyed on the statement object (only the module's few prebuilt statements come here) and the dialect.
@lru_cache(maxsize=64)
def _compiled(statement: Select[Any], dialect: Dialect) -> str:
    """``statement`` as the driver's SQL (named ``pyformat`` parameters), for :func:`read_tuples`."""
    return str(statement.compile(dialect=dialect))


def read_job(connection: Connection, *, tenant_id: str, job_id: str) -> JobRecord:
    """The tenant's job with its artifacts, in one query (a poll's only one).

    Raises:
        NotFound: no such job, or another tenant's (which must look the same).
    """
    rows: Sequence[Sequence[Any]] = ()
    if is_id(job_id):
        rows = _rows(connection, _READ_JOB, {"job_id": job_id, "tenant_id": tenant_id})
    if not rows:
        raise NotFound(f"no job with id {job_id[:64]!r}")
    n = _JOB_COLUMN_COUNT
    artifacts = [ArtifactRecord(*r[n:]) for r in rows if r[n] is not None]
    return JobRecord.of(rows[0], artifacts, utc=connection.dialect.name != "postgresql")


_LIST_ARTIFACTS = (
    select(*_ARTIFACT_COLUMNS)
    .where(_ARTIFACTS.c.job_id.in_(bindparam("job_ids", expanding=True)))
    .order_by(_ARTIFACTS.c.job_id, _ARTIFACTS.c.name)
)
# PostgreSQL takes the ids as one array parameter, so the SQL text is the same for any page size.
_LIST_ARTIFACTS_PG = (
    select(*_ARTIFACT_COLUMNS)
    .where(_ARTIFACTS.c.job_id == any_(bindparam("job_ids")))
    .order_by(_ARTIFACTS.c.job_id, _ARTIFACTS.c.name)
)


@cache
def _list_query(*, statuses: bool, cursor: bool, postgres: bool) -> Select[Any]:
    """The page's query in its forms (status filter or not, cursor or not), each built once."""
    query = (
        select(*_JOB_COLUMNS)
        .where(_JOBS.c.tenant_id == bindparam("tenant_id"))
        .order_by(_JOBS.c.created_at.desc(), _JOBS.c.id.desc())
    )
    if statuses:
        status = _JOBS.c.status
        # One array parameter on PostgreSQL, so the SQL text is the same for any number of statuses.
        in_statuses = (
            status == any_(bindparam("statuses"))
            if postgres
            else status.in_(bindparam("statuses", expanding=True))
        )
        query = query.where(in_statuses)
    if cursor:
        at, id = bindparam("at", type_=_JOBS.c.created_at.type), bindparam("id", type_=_JOBS.c.id.type)
        query = query.where(or_(_JOBS.c.created_at < at, and_(_JOBS.c.created_at == at, _JOBS.c.id < id)))
    return query.limit(bindparam("limit"))


def list_jobs(
    connection: Connection, *, tenant_id: str, statuses: list[str] | None, limit: int, cursor: str | None
) -> tuple[list[JobRecord], str | None]:
    """The tenant's jobs, newest first, in two queries (the page, then its artifacts).

    The cursor is the ``(created_at, id)`` of the previous page's last job.

    Raises:
        InvalidCursor: the cursor was not issued by this API.
    """
    postgres = connection.dialect.name == "postgresql"
    params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit + 1}
    if statuses:
        params["statuses"] = statuses
    if cursor:
        params["at"], params["id"] = decode_cursor(cursor)
    query = _list_query(statuses=bool(statuses), cursor=bool(cursor), postgres=postgres)
    rows = _rows(connection, query, params)
    more = len(rows) > limit
    rows = rows[:limit]
    by_job: dict[str, list[ArtifactRecord]] = {row[0]: [] for row in rows}
    if by_job:
        artifact_rows = _rows(
            connection, _LIST_ARTIFACTS_PG if postgres else _LIST_ARTIFACTS, {"job_ids": list(by_job)}
        )
        for job_id, *artifact in artifact_rows:
            by_job[job_id].append(ArtifactRecord(*artifact))
    jobs = [JobRecord.of(row, by_job[row[0]], utc=not postgres) for row in rows]
    next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].id) if more else None
    return jobs, next_cursor
