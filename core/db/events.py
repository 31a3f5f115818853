"""Appending to a job's event list (and, for subscribed transitions, to its webhook and MLflow outboxes)."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.orm import Session

from core.db.models import EventType, Job, JobEvent
from core.tracking import outbox as mlflow_outbox
from core.webhooks.outbox import enqueue_for_event


class JobState(Protocol):
    """What an event snapshots of a job: an ORM ``Job``, or the values a Core INSERT wrote."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def stage(self) -> str | None: ...
    @property
    def progress(self) -> float: ...


def event_values(
    job: JobState, type: EventType | str, message: str | None = None, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The columns of an event of ``job`` (its snapshot of status, stage and progress), for the ORM
    or a Core INSERT."""
    return {
        "job_id": job.id,
        "type": EventType(type).value,
        "status": str(job.status),
        "stage": None if job.stage is None else str(job.stage),
        "progress": job.progress,
        "message": message,
        "data": data,
    }


def record_event(
    session: Session,
    job: Job,
    type: EventType | str,
    message: str | None = None,
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Adds an event that snapshots the job's status, stage and progress; the caller commits."""
    event = JobEvent(**event_values(job, type, message, data))
    session.add(event)
    enqueue_for_event(session, job, event.type, message)
    mlflow_outbox.enqueue_for_event(session, job, event.type)
    return event
