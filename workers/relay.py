"""The relay: the workers, not the API, send each new job's message to the broker.

The API only inserts the job as ``queued`` (``published_at`` NULL) and commits; publishing cost the
API process 0.61 ms of CPU per submit, a quarter of its budget. Every worker's main process runs a
relay thread next to its reconciler. A pass claims the oldest unpublished queued jobs by setting
``published_at``, commits, then publishes each one:

- on PostgreSQL, one ``UPDATE ... FROM`` a ``SELECT ... LIMIT n FOR UPDATE SKIP LOCKED`` ``RETURNING``, so
  relays of several workers passing at once split the jobs between them instead of waiting on each
  other; on SQLite (no SKIP LOCKED) one conditional UPDATE per job. Either way a job is claimed by
  one relay, so it is published once;
- a job whose publish fails gets ``published_at`` back to NULL (with every job of the pass not yet
  published), and the next pass tries again;
- a relay that dies between its commit and the publish leaves a queued job marked published with no
  message. The reconciler recovers exactly that case: a queued job untouched for a lease that the
  broker's queue does not hold is published again (``Reconciler._republish_lost_messages``; the
  relay leaves ``updated_at`` alone, so the lease counts from the submit).

On PostgreSQL a trigger notifies ``core.queues.JOBS_CHANNEL`` for every inserted job (migration
0006) and the relay LISTENs on it with a connection of its own, so a new job is published as soon as
its INSERT commits. The notification is only a wake-up: the pass runs every ``poll_seconds`` anyway,
which covers a notification lost with the listening connection, and the first pass at start
publishes what was submitted while no worker ran. Without PostgreSQL the relay only polls.

Retried jobs (an expired lease) and re-published ones keep their ``published_at``: the reconciler
publishes those itself, as it did before the relay existed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from core.db.models import Job
from core.db.types import utcnow
from core.periodic import PeriodicThread
from core.queues import JOBS_CHANNEL

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

__all__ = ["Relay", "listen_conninfo"]

Publish = Callable[[str, str], None]  # (job_id, queue)

# How long one wait for a notification may block before the thread looks at its stop flag.
_WAIT_SLICE_SECONDS = 0.5


def listen_conninfo(database_url: str) -> str | None:
    """The libpq connection string for LISTEN on ``database_url``; None when it is not PostgreSQL."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Relay:
    """One pass with :meth:`run_once`; a background thread with :meth:`start`/:meth:`stop`.

    Args:
        session_factory: sessions on the jobs' database.
        publish: sends one job's message to its queue; raises when the broker refuses it.
        poll_seconds: the longest wait between passes (the only wake-up without PostgreSQL).
        conninfo: where to LISTEN for new jobs (:func:`listen_conninfo`); None: poll only.
        batch: the most jobs one pass claims; a full pass is followed by another at once.
    """

    session_factory: Callable[[], Session]
    publish: Publish
    poll_seconds: float
    conninfo: str | None = None
    batch: int = 100
    name: str = "nncompress-relay"

    def __post_init__(self) -> None:
        self._listener: psycopg.Connection[Any] | None = None  # opened by the thread
        self._stopping = threading.Event()
        self._thread = PeriodicThread(self.name, self._tick, lambda: self.poll_seconds)

    def run_once(self) -> int:
        """Publishes the queued jobs that no relay claimed yet; returns how many were published."""
        claimed_at = utcnow()
        with self.session_factory() as session:
            if session.get_bind().dialect.name == "postgresql":
                jobs = _claim_skip_locked(session, claimed_at, self.batch)
            else:
                jobs = _claim_one_by_one(session, claimed_at, self.batch)
            session.commit()
        for index, (job_id, queue) in enumerate(jobs):
            try:
                self.publish(job_id, queue)
            except Exception:
                # The broker is down or refused: hand the rest back rather than fail each in turn.
                unsent = [j for j, _ in jobs[index:]]
                log.exception(
                    "relay: publishing job %s to %s failed; %d job(s) left for the next pass",
                    job_id,
                    queue,
                    len(unsent),
                )
                self._release(unsent, claimed_at)
                return index
        return len(jobs)

    def _release(self, job_ids: list[str], claimed_at: datetime) -> None:
        with self.session_factory() as session:
            session.execute(
                update(Job)
                .where(Job.id.in_(job_ids), Job.published_at == claimed_at)
                .values(published_at=None, updated_at=Job.updated_at)
            )
            session.commit()

    def _tick(self) -> float:
        # Listen before the pass: a job committed during the pass then wakes the next one.
        listener = self._listen() if self.conninfo is not None else None
        if self.run_once() >= self.batch:
            return 0.0
        if listener is None:
            return self.poll_seconds
        self._wait_for_notification(listener, self.poll_seconds)
        return 0.0

    def _listen(self) -> psycopg.Connection[Any]:
        """The connection listening on the jobs channel, opened (again) if there is none."""
        if self._listener is not None and not self._listener.closed:
            return self._listener
        import psycopg
        from psycopg import sql

        conn = psycopg.connect(str(self.conninfo), autocommit=True, connect_timeout=5)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(JOBS_CHANNEL)))
        self._listener = conn
        return conn

    def _wait_for_notification(self, listener: psycopg.Connection[Any], timeout: float) -> bool:
        """Blocks until a job is announced or ``timeout`` passes; True when one was announced."""
        deadline = time.monotonic() + timeout
        try:
            while not self._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                slice_ = min(remaining, _WAIT_SLICE_SECONDS)
                # Consumed to the end: the generator holds the connection's lock until it finishes.
                if list(listener.notifies(timeout=slice_, stop_after=1)):
                    # One pass serves every job announced so far: drop the queued-up notifications.
                    list(listener.notifies(timeout=0))
                    return True
            return False
        except Exception:
            self._close_listener()  # the next tick connects again
            raise

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except Exception:  # already broken; nothing more to release
                log.debug("relay: closing the listening connection failed", exc_info=True)
            self._listener = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.stop(timeout)
        self._close_listener()


def _claim_skip_locked(session: Session, claimed_at: datetime, limit: int) -> list[tuple[str, str]]:
    # Rows another relay is claiming right now are skipped, not waited for. The pick is a MATERIALIZED
    # CTE, not ``WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)``: PostgreSQL plans that as a
    # nested-loop semi-join that runs the subquery again for every row of jobs, and measured here it
    # claimed all 5 unpublished jobs of a 2-job batch. The outer condition repeats the CTE's, so an
    # UPDATE never marks a row that another relay published in the meantime.
    pending = (
        select(Job.id)
        .where(Job.status == "queued", Job.published_at.is_(None))
        .order_by(Job.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("pending")
        .prefix_with("MATERIALIZED")
    )
    rows = session.execute(
        update(Job)
        .where(Job.id == pending.c.id, Job.published_at.is_(None))
        .values(published_at=claimed_at, updated_at=Job.updated_at)
        .returning(Job.id, Job.queue, Job.created_at)
    ).all()
    return [(str(job_id), str(queue)) for job_id, queue, _ in sorted(rows, key=lambda row: row[2])]


def _claim_one_by_one(session: Session, claimed_at: datetime, limit: int) -> list[tuple[str, str]]:
    pending = session.execute(
        select(Job.id, Job.queue)
        .where(Job.status == "queued", Job.published_at.is_(None))
        .order_by(Job.created_at)
        .limit(limit)
    ).all()
    claimed = []
    for job_id, queue in pending:
        # Conditional: of two relays that read the same row, one updates it and the other none.
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued", Job.published_at.is_(None))
            .values(published_at=claimed_at, updated_at=Job.updated_at)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            claimed.append((str(job_id), str(queue)))
    return claimed
