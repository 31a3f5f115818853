"""Failing queued jobs that nothing can run: a ``gpu`` job in a deployment whose GPU workers are gone.

Without this such a job waits in ``queued`` forever. Each Celery worker records, on every reconciler
pass, that its queues are served (a Redis key per queue, :func:`queue_beat_key`, expiring after
``no_worker_seconds``); a reconciler pass on any worker then fails the jobs that waited longer than
``no_worker_seconds`` in a queue nobody served within that time, with the stable error type
``no_worker``. Every write is a conditional UPDATE (``status='queued'``), so a worker that claims the
job at the same moment wins or loses cleanly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db.events import record_event
from core.db.models import Job
from core.db.types import utcnow

log = logging.getLogger(__name__)

NO_WORKER = "no_worker"
QUEUE_BEAT_PREFIX = "nncompress:queue-beat:"
# Seconds since the epoch of the last pass of any worker consuming the queue; None: none within the TTL.
QueueSeenAt = Callable[[str], float | None]


def queue_beat_key(queue: str) -> str:
    """The Redis key a worker consuming ``queue`` refreshes on each reconciler pass."""
    return QUEUE_BEAT_PREFIX + queue


def fail_unserved(
    session: Session, *, queue: str, waited_since: datetime, no_worker_seconds: float
) -> list[str]:
    """Fails (``no_worker``) the jobs queued on ``queue`` before ``waited_since``; returns their ids.

    The caller has established that no worker served ``queue`` for ``no_worker_seconds``.
    """
    candidates = list(
        session.scalars(
            select(Job.id).where(Job.status == "queued", Job.queue == queue, Job.created_at < waited_since)
        )
    )
    message = (
        f"no worker for the {queue!r} queue has been seen for {no_worker_seconds:g} s, so nothing can run "
        f"this job; start a worker with -Q {queue} (a GPU machine for device 'cuda') and submit it again, "
        "or submit it with device 'cpu'"
    )
    failed: list[str] = []
    for job_id in candidates:
        now = utcnow()
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(
                status="failed",
                error_type=NO_WORKER,
                error_message=message,
                finished_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            continue  # claimed or cancelled meanwhile
        job = session.get(Job, job_id)
        assert job is not None
        session.refresh(job)
        record_event(session, job, "failed", message=message, data={"error_type": NO_WORKER})
        session.commit()
        failed.append(job_id)
    session.rollback()
    return failed


def fail_jobs_without_workers(
    session: Session,
    *,
    queues: tuple[str, ...],
    queue_seen_at: QueueSeenAt,
    no_worker_seconds: float,
    now: datetime | None = None,
) -> list[str]:
    """For each of ``queues`` that no worker served within ``no_worker_seconds``, fails its jobs
    that waited at least that long; returns the failed ids."""
    now = now or utcnow()
    failed: list[str] = []
    for queue in queues:
        seen = queue_seen_at(queue)
        if seen is not None and now.timestamp() - seen <= no_worker_seconds:
            continue
        waited_since = now - timedelta(seconds=no_worker_seconds)
        for job_id in fail_unserved(
            session, queue=queue, waited_since=waited_since, no_worker_seconds=no_worker_seconds
        ):
            log.error("job %s: no worker serves the %s queue; failed %s", job_id, queue, NO_WORKER)
            failed.append(job_id)
    return failed
