"""Server-sent events of a job: the events list as it grows, until the job has finished.

The stream polls the database (the source of truth) rather than a broker, so it works the same in
embedded and distributed mode; ``Last-Event-ID`` resumes after a dropped connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.schemas.jobs import EventOut
from core.db.models import FINISHED_STATUSES, Job, JobEvent

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


def _fetch(session_factory: sessionmaker[Session], job_id: str, after: int) -> tuple[list[EventOut], bool]:
    with session_factory() as session:
        events = session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.id > after)
            .order_by(JobEvent.id)
            .limit(500)
        ).all()
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    return [EventOut.model_validate(e) for e in events], status in FINISHED_STATUSES


def format_event(event: EventOut) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(event.model_dump(mode='json'))}\n\n"


async def job_event_stream(
    session_factory: sessionmaker[Session], job_id: str, after: int, *, poll_seconds: float = POLL_SECONDS
) -> AsyncIterator[str]:
    """Yields SSE frames for events after ``after``; ends once the job has finished and all are sent."""
    cursor = after
    idle = 0.0
    yield "retry: 2000\n\n"
    while True:
        events, finished = await run_in_threadpool(_fetch, session_factory, job_id, cursor)
        for event in events:
            cursor = event.id
            yield format_event(event)
        if finished and not events:
            return
        if events:
            idle = 0.0
            continue
        await asyncio.sleep(poll_seconds)
        idle += poll_seconds
        if idle >= KEEPALIVE_SECONDS:
            idle = 0.0
            yield ": keep-alive\n\n"
