"""Where a job's time went: seconds per stage of its current attempt, from its ``stage`` events.

Each stage change records how long the stage that ended took (``stage_seconds``; the metrics' stage
duration histogram reads it). A job that ends keeps the per-stage sum of its last attempt in
``result.timings`` when the engine did not write its own report (failed, cancelled).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.models import Job, JobEvent
from core.db.types import utcnow

__all__ = ["attempt_timings", "keep_timings", "last_claim", "stage_time"]


def last_claim(session: Session, job_id: str) -> int:
    """The id of the job's last ``claimed`` event (0 when never claimed): where its attempt began."""
    claimed = session.scalar(
        select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id, JobEvent.type == "claimed")
    )
    return int(claimed or 0)


def stage_time(session: Session, job_id: str, stage: str | None) -> dict[str, Any] | None:
    """``{"stage_seconds": {"stage": s, "seconds": t}}`` for the stage that ends now (the metrics'
    stage duration histogram reads it from the event); None when no stage was running."""
    if stage is None:
        return None
    # Only this attempt's stages: a retried job still shows the stage its last attempt reached.
    started = session.scalar(
        select(JobEvent.at)
        .where(JobEvent.job_id == job_id, JobEvent.type == "stage", JobEvent.id > last_claim(session, job_id))
        .order_by(JobEvent.id.desc())
        .limit(1)
    )
    if started is None:
        return None
    seconds = max(0.0, (utcnow() - started).total_seconds())
    return {"stage_seconds": {"stage": str(stage), "seconds": round(seconds, 3)}}


def attempt_timings(session: Session, job_id: str) -> dict[str, float]:
    """Seconds per stage of the job's last attempt, from its ``stage_seconds`` events."""
    since_claim = (JobEvent.job_id == job_id) & (JobEvent.id > last_claim(session, job_id))
    rows = session.scalars(select(JobEvent.data).where(since_claim).order_by(JobEvent.id))
    timings: dict[str, float] = {}
    for data in rows:
        _add(timings, data)
    return timings


def _add(timings: dict[str, float], data: dict[str, Any] | None) -> None:
    """Adds an event's ``stage_seconds``, if it has one, to ``timings``."""
    timed = (data or {}).get("stage_seconds")
    if timed:
        stage = str(timed["stage"])
        timings[stage] = round(timings.get(stage, 0.0) + float(timed["seconds"]), 3)


def keep_timings(session: Session, job: Job, last: dict[str, Any] | None) -> None:
    """A job that ends without the engine's report still says where its time went: ``result.timings``."""
    if job.result is not None:
        return
    timings = attempt_timings(session, job.id)
    _add(timings, last)  # the stage that ends with the job: its event is not written yet
    if timings:
        job.result = {"timings": timings}
