"""Reading jobs for the polled endpoints (one job, a page of jobs) with Core queries, not the ORM.

Clients poll these in a loop, so their cost per request is the API's capacity. Measured on this
2-core machine (benchmarks/api_load.py, CPU per read of one job with its artifacts): the ORM query
with ``joinedload`` took 400 µs on SQLite and 900 µs on PostgreSQL; the same outer join in Core,
rows read into :class:`JobRecord`, 60 and 300 µs. Writes stay in the ORM (``app.services.jobs``).

The connections come from the read engine (:func:`core.db.session.make_read_engine`: autocommit, no
pre-ping), so every statement goes through :func:`core.db.session.read_rows`, which runs it once more
when the pooled connection turns out to be dead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, or_, select

from app.services.pagination import decode_cursor, encode_cursor
from core.db.models import Artifact, Job
from core.db.session import read_rows
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


@dataclass(frozen=True)
class ArtifactRecord:
    name: str
    size_bytes: int
    sha256: str
    media_type: str


@dataclass(frozen=True)
class JobRecord:
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
    def of(cls, row: Row[Any], artifacts: Sequence[ArtifactRecord]) -> JobRecord:
        fields = row._mapping
        return cls(**{c.name: fields[c.name] for c in _JOB_COLUMNS}, artifacts=tuple(artifacts))


def _artifact(row: Row[Any]) -> ArtifactRecord:
    return ArtifactRecord(row.name, row.size_bytes, row.sha256, row.media_type)


def read_job(connection: Connection, *, tenant_id: str, job_id: str) -> JobRecord:
    """The tenant's job with its artifacts, in one query (a poll's only one).

    Raises:
        NotFound: no such job, or another tenant's (which must look the same).
    """
    rows: Sequence[Row[Any]] = ()
    if is_id(job_id):
        rows = read_rows(connection, _READ_JOB, {"job_id": job_id, "tenant_id": tenant_id})
    if not rows:
        raise NotFound(f"no job with id {job_id[:64]!r}")
    artifacts = [
        ArtifactRecord(r.artifact_name, r.artifact_size_bytes, r.artifact_sha256, r.artifact_media_type)
        for r in rows
        if r.artifact_name is not None
    ]
    return JobRecord.of(rows[0], artifacts)


def list_jobs(
    connection: Connection, *, tenant_id: str, statuses: list[str] | None, limit: int, cursor: str | None
) -> tuple[list[JobRecord], str | None]:
    """The tenant's jobs, newest first, in two queries (the page, then its artifacts).

    The cursor is the ``(created_at, id)`` of the previous page's last job.

    Raises:
        InvalidCursor: the cursor was not issued by this API.
    """
    query = (
        select(*_JOB_COLUMNS)
        .where(_JOBS.c.tenant_id == tenant_id)
        .order_by(_JOBS.c.created_at.desc(), _JOBS.c.id.desc())
    )
    if statuses:
        query = query.where(_JOBS.c.status.in_(statuses))
    if cursor:
        at, id = decode_cursor(cursor)
        query = query.where(or_(_JOBS.c.created_at < at, and_(_JOBS.c.created_at == at, _JOBS.c.id < id)))
    rows = read_rows(connection, query.limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    by_job: dict[str, list[ArtifactRecord]] = {row.id: [] for row in rows}
    if by_job:
        artifact_rows = read_rows(
            connection,
            select(*_ARTIFACT_COLUMNS)
            .where(_ARTIFACTS.c.job_id.in_(list(by_job)))
            .order_by(_ARTIFACTS.c.job_id, _ARTIFACTS.c.name),
        )
        for row in artifact_rows:
            by_job[row.job_id].append(_artifact(row))
    jobs = [JobRecord.of(row, by_job[row.id]) for row in rows]
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
    return jobs, next_cursor
