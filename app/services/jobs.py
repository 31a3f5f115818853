"""Creating and cancelling jobs (idempotent creation via a unique ``idempotency_key``), their events and
webhook deliveries; the polled reads are in ``app.services.job_reads``."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.principal import Principal
from app.schemas.jobs import JobIn
from app.services.bounds import JobLimits
from app.services.validation import validate_job
from core.db.events import record_event
from core.db.models import (
    Dataset,
    EventType,
    Job,
    JobEvent,
    JobStatus,
    MlflowDelivery,
    Model,
    Tenant,
    WebhookDelivery,
)
from core.db.types import is_id, new_id, utcnow
from core.errors import IdempotencyConflict, InvalidJobSpec, JobFinished, NotFound, TooManyJobs
from core.webhooks.urls import check_webhook_url

UNFINISHED_STATUSES = ("queued", "running", "cancelling")


def request_hash(body: JobIn) -> str:
    """A hash of the request's meaning (key order and whitespace do not change it)."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(session: Session, tenant_id: str, key: str, digest: str) -> Job | None:
    job = session.scalars(
        select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
    ).one_or_none()
    if job is not None and job.request_hash != digest:
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was used for a different request (job {job.id}); use a new key",
            errors=[{"header": "Idempotency-Key", "job_id": job.id}],
        )
    return job


def _check_unfinished_limit(session: Session, tenant_id: str, limit: int, new_job_id: str) -> None:
    """Refuses the job ``new_job_id`` if the tenant's other unfinished jobs are already at ``limit``.

    On PostgreSQL called after the job's INSERT, just before the commit, so the tenant row is locked
    for two round trips rather than for the inserts too: concurrent submissions of one tenant queue
    on that lock, and 8 of them at once spent most of their time waiting there. FOR NO KEY UPDATE,
    since the job's foreign key already holds a KEY SHARE lock on the row (FOR UPDATE would deadlock
    two submissions against each other's). Each count runs after the lock in a fresh snapshot (READ
    COMMITTED), so it sees every job committed before. On SQLite called before the INSERT, as it was.
    """
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))
    unfinished_jobs = select(Job.id).where(
        Job.tenant_id == tenant_id, Job.status.in_(UNFINISHED_STATUSES), Job.id != new_job_id
    )
    # Counts no further than the limit: a tenant allowed thousands of jobs would otherwise pay a scan
    # of all of them on every submit. Only a refusal counts them all, for its message.
    at_most = session.scalar(select(func.count()).select_from(unfinished_jobs.limit(limit).subquery()))
    if int(at_most or 0) >= limit:
        unfinished = session.scalar(select(func.count()).select_from(unfinished_jobs.subquery()))
        raise TooManyJobs(
            f"this tenant has {unfinished} queued or running jobs, its limit is {limit}; "
            "wait for one to finish or cancel one",
            errors=[{"unfinished": int(unfinished or 0), "limit": limit}],
        )


def _webhook_of(body: JobIn, allow_private: bool) -> dict[str, Any] | None:
    if body.webhook is None:
        return None
    check_webhook_url(body.webhook.url, allow_private=allow_private)
    return body.webhook.model_dump(exclude_none=True)


def _mlflow_of(body: JobIn, default_experiment: str | None) -> dict[str, Any] | None:
    if default_experiment is None:
        if body.mlflow is not None:
            raise InvalidJobSpec(
                "this server does not log jobs to MLflow (no MLFLOW_TRACKING_URI is set); leave out 'mlflow'",
                errors=[{"field": "mlflow"}],
            )
        return None
    asked = body.mlflow.model_dump(exclude_none=True) if body.mlflow is not None else {}
    return {"experiment": default_experiment, **asked}


def create_job(
    *,
    session: Session,
    principal: Principal,
    body: JobIn,
    idempotency_key: str | None,
    max_attempts: int,
    webhook_allow_private: bool = False,
    limits: JobLimits | None = None,
    cuda_available: bool = True,
    mlflow_experiment: str | None = None,
) -> tuple[Job, bool]:
    """Validates and inserts a queued job with its ``created`` event, within the tenant's limits.

    Returns:
        The job and whether it was created now (False: an earlier request with the same key made it).

    Raises:
        NotFound: the model is not the tenant's. TooManyJobs: the tenant's unfinished jobs are at
        its limit. InvalidWebhook: the callback URL is refused. InvalidJobSpec: over ``limits``, or
        ``device: cuda`` where nothing can run it (``cuda_available`` False), or ``mlflow`` on a server
        that does not track (``mlflow_experiment`` None; set, it is the experiment of jobs naming
        none). And the spec's validation errors.
    """
    digest = request_hash(body)
    tenant_id = principal.tenant_id
    if idempotency_key and (existing := _replay(session, tenant_id, idempotency_key, digest)):
        return existing, False
    model = session.get(Model, body.model_id) if is_id(body.model_id) else None
    if model is None or model.tenant_id != tenant_id:
        raise NotFound(f"no model with id {body.model_id!r}", errors=[{"field": "model_id"}])
    webhook = _webhook_of(body, webhook_allow_private)
    mlflow = _mlflow_of(body, mlflow_experiment)
    dataset = session.get(Dataset, body.dataset_id) if body.dataset_id and is_id(body.dataset_id) else None
    if body.dataset_id is not None and (dataset is None or dataset.tenant_id != tenant_id):
        raise NotFound(f"no data set with id {body.dataset_id!r}", errors=[{"field": "dataset_id"}])
    if body.device == "cuda" and not cuda_available:
        raise InvalidJobSpec(
            "device 'cuda' was asked for, but this server runs jobs in-process and has no CUDA device; "
            "use device 'cpu' (or 'auto')",
            errors=[{"field": "device", "value": "cuda", "expected": ["cpu", "auto"]}],
        )
    spec = validate_job(model=model, body=body, dataset=dataset, limits=limits)
    job_id = new_id()
    # SQLite takes its one write lock at the INSERT; counting before it keeps that lock short, as it
    # was (benchmarks/api_load.py, embedded, 8 connections: p99 445 ms counting inside, 294 first).
    count_first = session.get_bind().dialect.name == "sqlite"
    if count_first:
        _check_unfinished_limit(session, tenant_id, principal.max_concurrent_jobs, job_id)
    job = Job(
        id=job_id,
        tenant_id=tenant_id,
        webhook=webhook,
        mlflow=mlflow,
        model_id=model.id,
        status=JobStatus.QUEUED.value,
        progress=0.0,
        spec=spec,
        device=body.device,
        queue="gpu" if body.device == "cuda" else "cpu",
        idempotency_key=idempotency_key,
        request_hash=digest,
        max_attempts=max_attempts,
        artifacts=[],  # a new job has none: the response must not lazy-load them (a query)
    )
    try:
        session.add(job)
        session.flush()
        record_event(session, job, EventType.CREATED, "job queued")
        if not count_first:
            _check_unfinished_limit(session, tenant_id, principal.max_concurrent_jobs, job.id)
        session.commit()
    except TooManyJobs:
        session.rollback()  # the job goes, and the tenant's lock with it, before the 429 is written
        raise
    except IntegrityError:
        # Lost a race with a concurrent request carrying the same key: answer with its job.
        session.rollback()
        winner = _replay(session, tenant_id, idempotency_key, digest) if idempotency_key else None
        if winner is None:
            raise
        return winner, False
    return job, True


def list_events(
    *, session: Session, job: Job, after: int | None, limit: int
) -> tuple[list[JobEvent], int | None]:
    query = select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id).limit(limit)
    if after is not None:
        query = query.where(JobEvent.id > after)
    events = list(session.scalars(query))
    return events, (events[-1].id if events else after)


def list_deliveries(*, session: Session, job: Job) -> list[WebhookDelivery]:
    """Every webhook attempt of the job (and the pending ones), oldest first."""
    query = select(WebhookDelivery).where(WebhookDelivery.job_id == job.id).order_by(WebhookDelivery.id)
    return list(session.scalars(query))


def list_mlflow_deliveries(*, session: Session, job: Job) -> list[MlflowDelivery]:
    """Every attempt to log the job to MLflow (and the pending one), oldest first."""
    query = select(MlflowDelivery).where(MlflowDelivery.job_id == job.id).order_by(MlflowDelivery.id)
    return list(session.scalars(query))


def _transition(session: Session, job: Job, source: str, values: dict[str, Any]) -> bool:
    """One conditional UPDATE: applies ``values`` only if the job is still in ``source``."""
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == source)
        .values(**values, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def cancel_job(*, session: Session, job: Job) -> Job:
    """Queued → cancelled now; running → cancelling (the worker kills the child); finished → 409."""
    for _ in range(3):  # the status may move under us (claimed, finished) between read and write
        session.refresh(job)
        now = utcnow()
        if job.status == JobStatus.QUEUED.value:
            values = {"status": "cancelled", "cancel_requested": True, "finished_at": now}
            if _transition(session, job, "queued", values):
                session.refresh(job)
                record_event(session, job, EventType.CANCELLED, "cancelled before it started")
                session.commit()
                return job
        elif job.status == JobStatus.RUNNING.value:
            if _transition(session, job, "running", {"status": "cancelling", "cancel_requested": True}):
                session.refresh(job)
                record_event(session, job, EventType.CANCEL_REQUESTED, "cancellation requested")
                session.commit()
                return job
        elif job.status == JobStatus.CANCELLING.value:
            return job
        else:
            raise JobFinished(f"job {job.id} already {job.status}; nothing to cancel")
        session.rollback()
    raise JobFinished(f"job {job.id} changed state repeatedly while cancelling; retry")
