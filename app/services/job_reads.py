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

A page of jobs on PostgreSQL is one query too (its artifacts aggregated per job), of plain values
(its JSON as text), so a row is a key: each distinct row is read into a :class:`ListedJob` once, and
:func:`app.schemas.jobs.job_page_json` writes each distinct job once. Nothing is kept across a
change: any changed value is another key. Measured in one process (20 jobs as
benchmarks/api_load.py submits them, reading and writing the page, in alternation, loaded machine):
before, 570-690 µs of CPU a page; now 200-280 µs for a page read again unchanged, 530-590 µs when
every row changed, 570-640 µs with every cache empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from functools import cache, lru_cache
from math import copysign
from typing import Any, NamedTuple, TypeVar

from pydantic_core import to_json
from sqlalchemy import Connection, Dialect, Select, Text, and_, any_, bindparam, cast, func, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

from app.services.pagination import decode_cursor, encode_cursor
from core.db.models import Artifact, Job
from core.db.session import _loads, read_rows, read_tuples
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

# What a page shows of a job's JSON columns is their JSON as the API writes it (see ListedJob).
_RAW_COLUMNS = ("spec", "metrics", "result", "webhook", "mlflow")


class ListedJob(NamedTuple):
    """A job as a page lists it: :class:`JobRecord`'s fields, in its order, but with the JSON columns
    (spec, metrics, result, webhook, mlflow) as the JSON the API writes for them (``null`` for none;
    the webhook without its secret), which :func:`app.schemas.jobs.job_page_json` splices into the
    page as they are. Hashable, and equal for jobs the page writes alike (see
    :func:`app.schemas.jobs.job_page_json`).

    A page of 20 jobs as the benchmark submits them spent a third of its CPU parsing each spec and
    writing it out again (5 µs each way a job); a job's spec never changes once it is submitted, and
    its other columns change at most a few times, so the same text is mostly read again and again.
    """

    id: str
    status: str
    stage: str | None
    progress: float
    model_id: str
    spec: bytes
    device: str
    queue: str
    error_type: str | None
    error_message: str | None
    metrics: bytes
    result: bytes
    attempt: int
    max_attempts: int
    cancel_requested: bool
    webhook: bytes
    mlflow: bytes
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    artifacts: tuple[ArtifactRecord, ...] = ()


# What the list keeps (below and in app.schemas.jobs) is bounded in entries and in size: a job whose
# spec, metrics, result and error message hold more text than this is read and written afresh each
# time (the other columns are short). The spec of a job as the benchmark submits it is 760
# characters; the caches then hold ~3 MB, and at most ~25 MB (each of the three keeps the text and
# what was made of it), per API process. 512 entries cover a page of the largest size (200 jobs).
KEPT_JSON = 8_192
KEPT_ENTRIES = 512


# Text to JSON bytes is a pure function of the text, so its results are kept: a poll of the list
# reads the same documents each time.
@lru_cache(maxsize=KEPT_ENTRIES)
def _stored_json(text: str) -> bytes:
    """A ``json`` column's text (as the database holds it) as the API writes the value it holds."""
    return _json_bytes(text)


def _json_bytes(text: str) -> bytes:
    return to_json(_loads(text), inf_nan_mode="null")


def _json_of(text: str | None) -> bytes:
    if text is None:
        return b"null"
    return _stored_json(text) if len(text) <= KEPT_JSON else _json_bytes(text)


@lru_cache(maxsize=KEPT_ENTRIES)
def _stored_webhook(text: str) -> bytes:
    return _webhook_json(_loads(text))


def _webhook_json(webhook: dict[str, Any] | None) -> bytes:
    # What app.schemas.jobs.job_dict shows of a webhook (WebhookOut): never its secret.
    shown = {"url": webhook["url"], "events": webhook["events"]} if webhook else None
    return to_json(shown, inf_nan_mode="null")


# On PostgreSQL a page is one query: the JSON columns come as their text (not parsed: see
# _stored_json), and the job's artifacts as the text of one JSON array of [name, size_bytes, sha256,
# media_type]. Its columns are ListedJob's, in its order: plain values, so a row is a key (_listed).
_PAGE_ARTIFACTS = (
    select(
        func.json_agg(aggregate_order_by(func.json_build_array(*_ARTIFACT_COLUMNS[1:]), _ARTIFACTS.c.name))
    )
    .where(_ARTIFACTS.c.job_id == _JOBS.c.id)
    .scalar_subquery()
)
_PAGE_COLUMNS = (
    *(cast(c, Text).label(c.name) if c.name in _RAW_COLUMNS else c for c in _JOB_COLUMNS),
    cast(_PAGE_ARTIFACTS, Text).label("artifacts"),
)


@cache
def _list_query(*, statuses: bool, cursor: bool, postgres: bool) -> Select[Any]:
    """The page's query in its forms (status filter or not, cursor or not), each built once."""
    columns = _PAGE_COLUMNS if postgres else _JOB_COLUMNS
    query = (
        select(*columns)
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


def _listed(row: Sequence[Any]) -> ListedJob:
    """The job of a row of the PostgreSQL page query (:data:`_PAGE_COLUMNS`)."""
    # The row is plain values (its JSON as text), so equal rows make equal jobs: it is read once per
    # distinct row. Rows compare their timestamps by instant, which is all the job keeps of them
    # (in UTC); and 0.0 == -0.0, so the sign of the progress goes into the key too.
    sign = copysign(1.0, row[_PROGRESS])
    if (
        len(row[_SPEC]) + len(row[_METRICS] or "") + len(row[_RESULT] or "") + len(row[_ERROR] or "")
        > KEPT_JSON
    ):
        return _listed_row.__wrapped__(tuple(row), sign)
    return _listed_row(tuple(row), sign)


_PROGRESS, _SPEC, _METRICS, _RESULT, _ERROR = (
    JobRecord._fields.index(n) for n in ("progress", "spec", "metrics", "result", "error_message")
)


# A page of 20 jobs read again unchanged, as polling reads it, costs a hash of each row instead of
# building the job (4 µs a job).
@lru_cache(maxsize=KEPT_ENTRIES)
def _listed_row(row: tuple[Any, ...], _progress_sign: float) -> ListedJob:
    (id, status, stage, progress, model_id, spec, device, queue, error_type, error_message, metrics,
     result, attempt, max_attempts, cancel_requested, webhook, mlflow, created_at, started_at,
     finished_at, updated_at, artifacts) = row  # fmt: skip
    return ListedJob(
        id, status, stage, progress, model_id, _json_of(spec), device, queue, error_type,
        error_message, _json_of(metrics), _json_of(result), attempt, max_attempts, cancel_requested,
        b"null" if webhook is None else _stored_webhook(webhook), _json_of(mlflow), _utc(created_at),
        _utc(started_at), _utc(finished_at), _utc(updated_at),
        tuple(ArtifactRecord(*a) for a in _loads(artifacts)) if artifacts else (),
    )  # fmt: skip


def _listed_record(job: JobRecord) -> ListedJob:
    """A job read with its JSON columns parsed (SQLite: SQLAlchemy's type read them) as a page lists it."""
    values: list[Any] = list(job)
    for i in _RAW_FIELDS:
        values[i] = to_json(values[i], inf_nan_mode="null")
    values[_WEBHOOK] = _webhook_json(job.webhook)
    return ListedJob._make(values)


_RAW_FIELDS = tuple(JobRecord._fields.index(name) for name in _RAW_COLUMNS if name != "webhook")
_WEBHOOK = JobRecord._fields.index("webhook")


_At = TypeVar("_At", datetime, None)


def _utc(at: _At) -> _At:
    # psycopg's datetimes carry the session's time zone; SQLAlchemy's UTCDateTime gives them in UTC.
    return at if at is None or at.tzinfo is timezone.utc else at.astimezone(timezone.utc)


def list_jobs(
    connection: Connection, *, tenant_id: str, statuses: list[str] | None, limit: int, cursor: str | None
) -> tuple[list[ListedJob], str | None]:
    """The tenant's jobs, newest first, with their artifacts.

    One query on PostgreSQL; two on SQLite (the page, then its artifacts), where a query costs
    little and SQLAlchemy's type reads the JSON columns. The cursor is the ``(created_at, id)`` of
    the previous page's last job.

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
    if postgres:
        jobs = [_listed(row) for row in rows]
    else:
        by_job: dict[str, list[ArtifactRecord]] = {row[0]: [] for row in rows}
        if by_job:
            for job_id, *artifact in _rows(connection, _LIST_ARTIFACTS, {"job_ids": list(by_job)}):
                by_job[job_id].append(ArtifactRecord(*artifact))
        jobs = [_listed_record(JobRecord.of(row, by_job[row[0]], utc=True)) for row in rows]
    next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].id) if more else None
    return jobs, next_cursor
