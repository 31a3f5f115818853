"""MLflow deliveries written with the transition that ends a job, in the same transaction.

Like webhooks (core/webhooks/outbox.py), the job never talks to MLflow: ending it adds a pending
``mlflow_deliveries`` row, and the logger (core/tracking/logger.py) writes the run afterwards. A slow
or dead tracking server therefore never fails or delays a job.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.db.models import Job, MlflowDelivery
from core.db.types import utcnow

# The events that end a job; each job has exactly one (the transitions are conditional UPDATEs).
FINAL_EVENTS = frozenset({"succeeded", "failed", "cancelled"})


def enqueue_for_event(session: Session, job: Job, event_type: str) -> None:
    """Adds a pending delivery when a tracked job (``job.mlflow`` set) ends; the caller commits."""
    if job.mlflow is None or event_type not in FINAL_EVENTS:
        return
    session.add(MlflowDelivery(job_id=job.id, attempt=1, next_attempt_at=utcnow()))
