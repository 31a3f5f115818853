"""The loop shared by the service's outboxes (webhook deliveries, MLflow runs): due rows, claims, retries.

A row of an outbox table is one attempt. Several pollers (the embedded dispatcher, every Celery worker's
main process) may read the same table; each claims a row with a conditional UPDATE (``at`` from NULL to
now), so an attempt is made once. A poller that dies mid-attempt leaves a claimed row without outcome;
the next pass records it as failed, which schedules the retry. Subclasses say what one attempt does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db.types import utcnow
from core.periodic import PeriodicThread
from core.settings import Settings

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600.0
BATCH = 20


class OutboxPoller:
    """One pass with :meth:`run_once`; a background thread with :meth:`start`/:meth:`stop`.

    Subclasses set ``table`` (a model with ``id``, ``at`` and ``next_attempt_at`` columns) and
    ``thread_name``, and implement :meth:`backoff_base`, :meth:`poll_seconds`, :meth:`_attempt` and
    :meth:`_recover_abandoned`.
    """

    table: ClassVar[Any]
    thread_name: ClassVar[str]

    def __init__(self, session_factory: Callable[[], Session], settings: Settings) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self._thread = PeriodicThread(self.thread_name, self._tick, self.poll_seconds)

    def backoff_base(self) -> float:
        raise NotImplementedError

    def poll_seconds(self) -> float:
        raise NotImplementedError

    def backoff(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``: base, 2x base, 4x base, ... capped at an hour."""
        return min(MAX_BACKOFF_SECONDS, self.backoff_base() * 2 ** (attempt - 1))

    def run_once(self) -> int:
        """Makes every due attempt; returns how many were made."""
        self._recover_abandoned()
        now, table = utcnow(), self.table
        with self.session_factory() as session:
            due = list(
                session.scalars(
                    select(table.id)
                    .where(table.at.is_(None), table.next_attempt_at <= now)
                    .order_by(table.next_attempt_at, table.id)
                    .limit(BATCH)
                )
            )
        return sum(self._attempt(row_id) for row_id in due)

    def _claim(self, session: Session, row_id: int) -> bool:
        """Marks the row as being attempted; False when another poller took it first."""
        table = self.table
        claimed = session.execute(
            update(table).where(table.id == row_id, table.at.is_(None)).values(at=utcnow())
        )
        session.commit()
        return bool(claimed.rowcount)  # type: ignore[attr-defined]

    def _attempt(self, row_id: int) -> int:
        """Claims and makes one attempt; returns 1 when it was made, 0 when there was nothing to do."""
        raise NotImplementedError

    def _recover_abandoned(self) -> None:
        raise NotImplementedError

    def _tick(self) -> float:
        # Right away again while there was work: a burst of due rows is drained without waiting.
        return 0.0 if self.run_once() else self.poll_seconds()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._thread.stop(timeout)
