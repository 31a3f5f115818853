"""Creating, listing and cancelling jobs; idempotent creation via a unique ``idempotency_key``."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from app.db.events import record_event
from app.db.models import EventType, Job, JobEvent, JobStatus, Model
from app.db.types import new_id, utcnow
from app.errors import IdempotencyConflict, JobFinished, NotFound
from app.schemas.jobs import JobIn
from app.services.pagination import decode_cursor, encode_cursor
from app.services.validation import validate_job


def request_hash(body: JobIn) -> str:
    """A hash of the request's meaning (key order and whitespace do not change it)."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(session: Session, key: str, digest: str) -> Job | None:
    job = session.scalars(select(Job).where(Job.idempotency_key == key)).one_or_none()
    if job is not None and job.request_hash != digest:
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was used for a different request (job {job.id}); use a new key",
            errors=[{"header": "Idempotency-Key", "job_id": job.id}],
        )
    return job


def create_job(
    *, session: Session, body: JobIn, idempotency_key: str | None, max_attempts: int
) -> tuple[Job, bool]:
    """Validates and inserts a queued job with its ``created`` event.

    Returns:
        The job and whether it was created now (False: an earlier request with the same key made it).
    """
    digest = request_hash(body)
    if idempotency_key and (existing := _replay(session, idempotency_key, digest)):
        return existing, False
    model = session.get(Model, body.model_id)
    if model is None:
        raise NotFound(f"no model with id {body.model_id!r}", errors=[{"field": "model_id"}])
    job = Job(
        id=new_id(),
        model_id=model.id,
        status=JobStatus.QUEUED.value,
        progress=0.0,
        spec=validate_job(model=model, body=body),
        device=body.device,
        queue="gpu" if body.device == "cuda" else "cpu",
        idempotency_key=idempotency_key,
        request_hash=digest,
        max_attempts=max_attempts,
    )
    try:
        session.add(job)
        session.flush()
        record_event(session, job, EventType.CREATED, "job queued")
        session.commit()
    except IntegrityError:
        # Lost a race with a concurrent request carrying the same key: answer with its job.
        session.rollback()
        winner = _replay(session, idempotency_key, digest) if idempotency_key else None
        if winner is None:
            raise
        return winner, False
    return job, True


def list_jobs(
    *, session: Session, statuses: list[str] | None, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """Newest first; the cursor is the (created_at, id) of the last job of the previous page."""
    query = select(Job).options(selectinload(Job.artifacts)).order_by(Job.created_at.desc(), Job.id.desc())
    if statuses:
        query = query.where(Job.status.in_(statuses))
    if cursor:
        at, id = decode_cursor(cursor)
        query = query.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < id)))
    jobs = list(session.scalars(query.limit(limit + 1)))
    if len(jobs) <= limit:
        return jobs, None
    jobs = jobs[:limit]
    return jobs, encode_cursor(jobs[-1].created_at, jobs[-1].id)


def list_events(
    *, session: Session, job: Job, after: int | None, limit: int
) -> tuple[list[JobEvent], int | None]:
    query = select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id).limit(limit)
    if after is not None:
        query = query.where(JobEvent.id > after)
    events = list(session.scalars(query))
    return events, (events[-1].id if events else after)


def _transition(session: Session, job: Job, source: str, values: dict[str, Any]) -> bool:
    """One conditional UPDATE: applies ``values`` only if the job is still in ``source``."""
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == source)
        .values(**values, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def cancel_job(*, session: Session, job: Job) -> Job:
    """Queued → cancelled now; running → cancelling (the worker kills the child); finished → 409."""
    for _ in range(3):  # the status may move under us (claimed, finished) between read and write
        session.refresh(job)
        now = utcnow()
        if job.status == JobStatus.QUEUED.value:
            values = {"status": "cancelled", "cancel_requested": True, "finished_at": now}
            if _transition(session, job, "queued", values):
                session.refresh(job)
                record_event(session, job, EventType.CANCELLED, "cancelled before it started")
                session.commit()
                return job
        elif job.status == JobStatus.RUNNING.value:
            if _transition(session, job, "running", {"status": "cancelling", "cancel_requested": True}):
                session.refresh(job)
                record_event(session, job, EventType.CANCEL_REQUESTED, "cancellation requested")
                session.commit()
                return job
        elif job.status == JobStatus.CANCELLING.value:
            return job
        else:
            raise JobFinished(f"job {job.id} already {job.status}; nothing to cancel")
        session.rollback()
    raise JobFinished(f"job {job.id} changed state repeatedly while cancelling; retry")
