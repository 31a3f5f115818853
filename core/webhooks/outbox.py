"""Webhook messages written with the transition that causes them, in the same transaction.

The job's code never sends anything: a transition adds a ``webhook_deliveries`` row, and the
deliverer (core/webhooks/deliverer.py) sends it later. A slow or dead receiver therefore never
delays a job, and a message exists exactly when its transition was committed.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from core.db.models import Job, WebhookDelivery
from core.db.types import utcnow

# Event types of the job's events list that a webhook subscriber can ask for, by their webhook name.
WEBHOOK_EVENT_OF = {
    "claimed": "started",
    "stage": "stage_changed",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}


def payload(job: Job, event: str, message: str | None) -> dict[str, Any]:
    """The message body: ``{type, timestamp, data}`` as Standard Webhooks suggests."""
    data: dict[str, Any] = {
        "job_id": job.id,
        "status": str(job.status),
        "stage": None if job.stage is None else str(job.stage),
        "progress": job.progress,
        "attempt": job.attempt,
        "message": message,
        "url": f"/v1/jobs/{job.id}",
    }
    if job.error_type:
        data["error"] = {"type": job.error_type, "message": job.error_message}
    return {"type": f"job.{event}", "timestamp": utcnow().isoformat(), "data": data}


def enqueue_for_event(session: Session, job: Job, event_type: str, message: str | None) -> None:
    """Adds a pending delivery if the job's webhook subscribed to this transition; the caller commits."""
    hook = job.webhook
    event = WEBHOOK_EVENT_OF.get(event_type)
    if not hook or event is None or event not in hook.get("events", ()):
        return
    session.add(
        WebhookDelivery(
            message_id=f"msg_{uuid.uuid4().hex}",
            job_id=job.id,
            event=event,
            payload=payload(job, event, message),
            attempt=1,
            next_attempt_at=utcnow(),
        )
    )
