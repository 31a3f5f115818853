"""Appending to a job's event list (and, for subscribed transitions, to its webhook and MLflow outboxes)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.db.models import EventType, Job, JobEvent
from core.tracking import outbox as mlflow_outbox
from core.webhooks.outbox import enqueue_for_event


def record_event(
    session: Session,
    job: Job,
    type: EventType | str,
    message: str | None = None,
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Adds an event that snapshots the job's status, stage and progress; the caller commits."""
    event = JobEvent(
        job_id=job.id,
        type=EventType(type).value,
        status=str(job.status),
        stage=None if job.stage is None else str(job.stage),
        progress=job.progress,
        message=message,
        data=data,
    )
    session.add(event)
    enqueue_for_event(session, job, event.type, message)
    mlflow_outbox.enqueue_for_event(session, job, event.type)
    return event
