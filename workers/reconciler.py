"""The reconciler: the periodic pass that makes the database, not the broker, decide what runs.

Every worker runs one in a thread (so a deployment with only ``celery ... worker -Q cpu`` needs no
beat process), and so does the embedded dispatcher. A pass:

1. recovers jobs whose lease expired (``state.reconcile``: retry, ``worker_lost``, or ``cancelled``)
   and publishes the retried ones again;
2. publishes again queued jobs that waited longer than a lease without being claimed *and* whose
   message the broker no longer seems to hold: when a queue holds fewer messages than the database
   has queued jobs for it, the oldest stale ones are re-published. That is the Redis-restarted-without-
   persistence case; the depth check keeps a mere backlog (all workers busy) from being re-published
   over and over. A re-published duplicate is harmless: the second delivery claims nothing;
3. fails (``no_worker``) queued gpu jobs when no worker served the gpu queue for ``no_worker_seconds``
   (``workers.no_worker``), where the deployment reports when queues were last served.

Passes on several workers may overlap; every write is conditional, so each job is recovered or
re-published once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Job
from core.db.types import utcnow
from core.periodic import PeriodicThread
from core.queues import QUEUES
from workers import state
from workers.no_worker import QueueSeenAt, fail_jobs_without_workers

log = logging.getLogger(__name__)

Publish = Callable[[str, str], None]  # (job_id, queue)
QueueDepth = Callable[[str], int | None]  # messages waiting in a queue, None when unknown


@dataclass
class Reconciler:
    """One pass with :meth:`run_once`; a background thread with :meth:`start`/:meth:`stop`."""

    session_factory: Callable[[], Session]
    publish: Publish
    queue_depth: QueueDepth
    interval_seconds: float
    unclaimed_after_seconds: float
    name: str = "reconciler"
    # Called after each pass: the worker's heartbeat for monitoring (a Redis key in distributed mode).
    on_pass: Callable[[], None] | None = None
    # When the queues' workers were last seen (distributed mode); None: every job has a runner here.
    queue_seen_at: QueueSeenAt | None = None
    no_worker_seconds: float = 600.0
    watched_queues: tuple[str, ...] = ("gpu",)  # a cpu job can run on any worker, so only gpu is watched

    def __post_init__(self) -> None:
        self.last_pass_at: float | None = None  # time.time() of the last completed pass
        self._thread = PeriodicThread(self.name, self._tick, lambda: self.interval_seconds)

    def run_once(self) -> state.ReconcileResult:
        with self.session_factory() as session:
            result = state.reconcile(session, utcnow())
            queues = {job_id: q for job_id, q in _queues_of(session, result.requeue)}
        for job_id in result.requeue:
            self.publish(job_id, queues.get(job_id, "cpu"))
        for job_id in result.retried:
            log.warning("job %s: lease expired; queued again", job_id)
        for job_id in result.lost:
            log.error("job %s: lease expired at its last attempt; failed worker_lost", job_id)
        self._republish_lost_messages()
        if self.queue_seen_at is not None:
            with self.session_factory() as session:
                fail_jobs_without_workers(
                    session,
                    queues=self.watched_queues,
                    queue_seen_at=self.queue_seen_at,
                    no_worker_seconds=self.no_worker_seconds,
                )
        return result

    def _republish_lost_messages(self) -> None:
        with self.session_factory() as session:
            queued = state.count_queued(session)
            for queue in QUEUES:
                waiting = queued.get(queue, 0)
                if not waiting:
                    continue
                depth = self.queue_depth(queue)
                missing = waiting if depth is None else waiting - depth
                if missing <= 0:
                    continue
                stale = state.stale_queued(
                    session, utcnow(), unclaimed_after=self.unclaimed_after_seconds, queue=queue
                )
                for job in stale[:missing]:
                    reason = (
                        f"not claimed for {self.unclaimed_after_seconds:g} s and not in the {queue} queue"
                    )
                    if state.mark_published(session, job.id, job.updated_at, reason=reason):
                        log.warning("job %s: %s; publishing again", job.id, reason)
                        self.publish(job.id, queue)

    def _tick(self) -> float:
        self.run_once()
        self.last_pass_at = time.time()
        if self.on_pass is not None:
            self.on_pass()
        return self.interval_seconds

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._thread.stop(timeout)


def _queues_of(session: Session, job_ids: list[str]) -> list[tuple[str, str]]:
    if not job_ids:
        return []
    rows = session.execute(select(Job.id, Job.queue).where(Job.id.in_(job_ids))).all()
    session.rollback()
    return [(str(i), str(q)) for i, q in rows]
