"""The job state machine on the database, shared by the Celery workers and the embedded dispatcher.

Every transition is one conditional UPDATE whose WHERE clause states what must still be true
(``status='queued'`` to claim, ``lease_owner=<me>`` to heartbeat or finish). Two workers racing for
the same row therefore cannot both win, on PostgreSQL or SQLite, with no explicit locking: the loser
updates zero rows and walks away. The broker only wakes workers; this module decides who runs what.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.db.events import record_event
from core.db.models import Artifact, Job
from core.db.types import utcnow
from workers.timings import keep_timings, stage_time

__all__ = [
    "ACTIVE_STATUSES",
    "ArtifactRecord",
    "ReconcileResult",
    "claim",
    "finish_cancelled",
    "finish_failed",
    "finish_succeeded",
    "heartbeat",
    "mark_published",
    "reconcile",
    "release",
    "set_progress",
]

# Statuses in which a worker holds the job's lease.
ACTIVE_STATUSES = ("running", "cancelling")

# Error types recorded by the machinery itself (engine errors use their own ``code``).
WORKER_LOST = "worker_lost"
WORKER_CRASHED = "worker_crashed"
TIMEOUT = "timeout"
INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class ArtifactRecord:
    """A file the job wrote under ``jobs/<job_id>/``, as it is listed on the job."""

    name: str
    sha256: str
    size_bytes: int
    media_type: str
    storage_key: str


@dataclass
class ReconcileResult:
    """What one reconciler pass did; ``requeue`` holds ids the dispatcher must publish again."""

    requeue: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def _apply(session: Session, stmt: Any) -> Job | None:
    """Runs a conditional UPDATE; the updated job, or None (rolled back) when its condition no longer held."""
    job = session.scalars(stmt.returning(Job).execution_options(synchronize_session=False)).one_or_none()
    if job is None:
        session.rollback()
    return job


def _requeued(session: Session, stmt: Any, reason: str) -> bool:
    job = _apply(session, stmt)
    if job is None:
        return False
    record_event(session, job, "requeued", message=reason)
    session.commit()
    return True


def _owned(job_id: str, worker_id: str) -> Any:
    return (Job.id == job_id) & (Job.lease_owner == worker_id) & Job.status.in_(ACTIVE_STATUSES)


def claim(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> Job | None:
    """Takes a queued job for ``worker_id``; returns None when it is not queued (duplicate delivery).

    One UPDATE ... WHERE status='queued' RETURNING: of two concurrent claimers exactly one gets the row.
    """
    now = utcnow()
    job = session.scalars(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(
            status="running",
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            heartbeat_at=now,
            attempt=Job.attempt + 1,
            started_at=now,
            updated_at=now,
        )
        .returning(Job)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if job is None:
        session.rollback()
        return None
    session.refresh(job)
    record_event(session, job, "claimed", data={"worker": worker_id, "attempt": job.attempt})
    session.commit()
    return job


def heartbeat(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Renews the lease; False means the job is no longer ours (finished, or recovered by the reconciler)."""
    now = utcnow()
    renewed = session.execute(
        update(Job)
        .where(_owned(job_id, worker_id))
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    session.commit()
    return renewed is not None


def set_progress(
    session: Session,
    job_id: str,
    worker_id: str,
    *,
    stage: str,
    percent: float,
    message: str | None = None,
    event: bool = False,
) -> bool:
    """Writes stage and percentage; records a ``stage`` event when the stage changes.

    ``event=True`` also records a ``progress`` event (the caller throttles: ``JobContext.progress``).
    The stage that was running before a change becomes ``last_finished_stage``, which a retry resumes
    from. Returns False when the job is no longer ours, so the job process can stop.
    """
    job = session.scalars(select(Job).where(_owned(job_id, worker_id))).one_or_none()
    if job is None:
        session.rollback()
        return False
    percent = min(100.0, max(0.0, float(percent)))
    previous = job.stage
    values: dict[str, Any] = {"stage": stage, "progress": percent, "updated_at": utcnow()}
    if previous is not None and previous != stage:
        values["last_finished_stage"] = previous
    updated = session.execute(
        update(Job)
        .where(_owned(job_id, worker_id))
        .values(**values)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if updated is None:
        session.rollback()
        return False
    session.refresh(job)
    if previous != stage:
        timed = stage_time(session, job_id, previous)
        record_event(session, job, "stage", message=message, data=timed)
    elif event:
        record_event(session, job, "progress", message=message)
    session.commit()
    return True


def _finish(
    session: Session, job_id: str, worker_id: str | None, status: str, values: dict[str, Any]
) -> Job | None:
    now = utcnow()
    condition = _owned(job_id, worker_id) if worker_id is not None else None
    stmt = update(Job).values(
        status=status, lease_owner=None, lease_expires_at=None, finished_at=now, updated_at=now, **values
    )
    stmt = stmt.where(condition) if condition is not None else stmt.where(Job.id == job_id)
    return _apply(session, stmt)


def finish_succeeded(
    session: Session,
    job_id: str,
    worker_id: str,
    *,
    metrics: dict[str, Any] | None,
    result: dict[str, Any] | None,
    artifacts: list[ArtifactRecord],
) -> bool:
    """Marks the job succeeded and lists its artifacts, in one transaction; False if it is not ours.

    A job whose cancellation was requested while its last stage ran still ends ``succeeded``: the work
    is done and its artifacts are complete, which is more useful than discarding them.
    """
    job = _finish(
        session, job_id, worker_id, "succeeded", {"metrics": metrics, "result": result, "progress": 100.0}
    )
    if job is None:
        return False
    # A previous attempt never lists artifacts (it did not reach this transaction), but be exact anyway.
    for existing in session.scalars(select(Artifact).where(Artifact.job_id == job_id)):
        session.delete(existing)
    session.flush()
    for art in artifacts:
        session.add(
            Artifact(
                job_id=job_id,
                name=art.name,
                sha256=art.sha256,
                size_bytes=art.size_bytes,
                media_type=art.media_type,
                storage_key=art.storage_key,
            )
        )
    session.refresh(job)
    data = {"artifacts": [a.name for a in artifacts], **(stage_time(session, job_id, job.stage) or {})}
    record_event(session, job, "succeeded", data=data)
    session.commit()
    return True


def finish_failed(
    session: Session, job_id: str, worker_id: str | None, *, error_type: str, message: str
) -> bool:
    """Marks the job failed with a stable ``error_type``; ``worker_id=None`` is the reconciler's override."""
    job = _finish(session, job_id, worker_id, "failed", {"error_type": error_type, "error_message": message})
    if job is None:
        return False
    last = stage_time(session, job_id, job.stage)
    keep_timings(session, job, last)
    record_event(session, job, "failed", message=message, data={"error_type": error_type, **(last or {})})
    session.commit()
    return True


def finish_cancelled(session: Session, job_id: str, worker_id: str, *, message: str | None = None) -> bool:
    """Marks the job cancelled (its process is already gone); False if it is not ours."""
    job = _finish(session, job_id, worker_id, "cancelled", {})
    if job is None:
        return False
    data = stage_time(session, job_id, job.stage)
    keep_timings(session, job, data)
    record_event(session, job, "cancelled", message=message or "cancelled while running", data=data)
    session.commit()
    return True


def release(session: Session, job_id: str, worker_id: str, *, reason: str) -> bool:
    """Hands a job back to the queue without counting the attempt (the worker is shutting down)."""
    now = utcnow()
    return _requeued(
        session,
        update(Job)
        .where(_owned(job_id, worker_id), Job.cancel_requested.is_(False))
        .values(
            status="queued",
            lease_owner=None,
            lease_expires_at=None,
            attempt=Job.attempt - 1,
            updated_at=now,
        ),
        reason,
    )


def mark_published(session: Session, job_id: str, seen_updated_at: datetime, *, reason: str) -> bool:
    """Records that a stale queued job is being published again; False if another reconciler already did.

    Bumping ``updated_at`` conditionally makes two reconcilers (one per worker) publish it once, and
    keeps a job from being re-published more often than once per ``unclaimed_after``.
    """
    now = utcnow()
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == "queued", Job.updated_at == seen_updated_at)
        .values(updated_at=now)
    )
    return _requeued(session, stmt, reason)


def stale_queued(
    session: Session, now: datetime, *, unclaimed_after: float, queue: str | None = None
) -> list[Job]:
    """Queued jobs untouched for ``unclaimed_after`` seconds, oldest first."""
    stmt = select(Job).where(
        Job.status == "queued", Job.updated_at < now - timedelta(seconds=unclaimed_after)
    )
    if queue is not None:
        stmt = stmt.where(Job.queue == queue)
    jobs = list(session.scalars(stmt.order_by(Job.created_at, Job.id)))
    session.rollback()
    return jobs


def count_queued(session: Session) -> dict[str, int]:
    """Queued jobs per broker queue (``cpu``/``gpu``)."""
    rows = session.execute(
        select(Job.queue, func.count()).where(Job.status == "queued").group_by(Job.queue)
    ).all()
    session.rollback()
    return {str(queue): int(n) for queue, n in rows}


def reconcile(session: Session, now: datetime | None = None) -> ReconcileResult:
    """Recovers jobs whose lease expired: the worker that held them died or lost the database.

    - ``running`` with attempts left → ``queued`` again (``retried`` event); the id is returned in
      ``requeue`` for the dispatcher to publish. ``last_finished_stage`` is kept so the next attempt
      resumes from it where the pipeline can.
    - ``running`` at ``max_attempts`` → ``failed`` with ``worker_lost``.
    - ``cancelling`` → ``cancelled`` (the job process died with its worker, which is what was asked).

    Stale *queued* jobs (message lost with a Redis restart) are the dispatcher's part, because only it
    knows whether the broker still holds their message: see ``stale_queued`` and ``mark_published``.
    Each recovery is a conditional UPDATE on the lease that was seen, so concurrent reconcilers on
    several workers recover a job once.
    """
    now = now or utcnow()
    result = ReconcileResult()
    expired = list(
        session.execute(
            select(
                Job.id, Job.status, Job.lease_owner, Job.attempt, Job.max_attempts, Job.lease_expires_at
            ).where(Job.status.in_(ACTIVE_STATUSES), Job.lease_expires_at < now)
        ).all()
    )
    session.rollback()
    for job_id, status, owner, attempt, max_attempts, expires in expired:
        seen = (
            (Job.id == job_id)
            & (Job.status == status)
            & (Job.lease_expires_at == expires)
            & (Job.lease_owner == owner if owner is not None else Job.lease_owner.is_(None))
        )
        detail = {
            "worker": owner,
            "attempt": attempt,
            "lease_expired_at": expires.isoformat() if expires else None,
        }
        if status == "cancelling":
            values: dict[str, Any] = {"status": "cancelled", "finished_at": now}
            event, message, bucket = "cancelled", "worker lost while cancelling", result.cancelled
        elif attempt < max_attempts:
            values = {"status": "queued", "stage": None, "progress": 0.0}
            event, message, bucket = (
                "retried",
                f"worker {owner} lost; retrying (attempt {attempt + 1})",
                result.retried,
            )
        else:
            values = {
                "status": "failed",
                "finished_at": now,
                "error_type": WORKER_LOST,
                "error_message": f"the worker running this job stopped responding ({attempt} attempts)",
            }
            event, message, bucket = "failed", "worker lost at the last attempt", result.lost
        job = _apply(
            session,
            update(Job).where(seen).values(lease_owner=None, lease_expires_at=None, updated_at=now, **values),
        )
        if job is None:  # another reconciler or the worker itself got there first
            continue
        if event == "failed":
            detail["error_type"] = WORKER_LOST
        record_event(session, job, event, message=message, data=detail)
        session.commit()
        bucket.append(job_id)
        if event == "retried":
            result.requeue.append(job_id)
    return result
