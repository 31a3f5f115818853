"""Creating and cancelling jobs (idempotent creation via a unique ``idempotency_key``), their events and
webhook deliveries; the polled reads are in ``app.services.job_reads``."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.principal import Principal
from app.schemas.jobs import JobIn
from app.services.bounds import JobLimits
from app.services.job_insert import JOB_COLUMNS, insert_queued_job
from app.services.job_reads import JobRecord
from app.services.model_views import ModelViews
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
    WebhookDelivery,
)
from core.db.session import writer_turn
from core.db.types import is_id, new_id, utcnow
from core.errors import IdempotencyConflict, InvalidJobSpec, JobFinished, NotFound, TooManyJobs
from core.webhooks.urls import check_webhook_url

# Descriptions of the models jobs were submitted for, shared by the API's threads (see model_views).
MODEL_VIEWS = ModelViews()


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
    connection: Connection,
    principal: Principal,
    body: JobIn,
    idempotency_key: str | None,
    max_attempts: int,
    webhook_allow_private: bool = False,
    limits: JobLimits | None = None,
    cuda_available: bool = True,
    mlflow_experiment: str | None = None,
    models: ModelViews = MODEL_VIEWS,
) -> tuple[Job | JobRecord, bool]:
    """Validates and inserts a queued job with its ``created`` event, within the tenant's limits.

    The job and its event are written on ``connection`` (on PostgreSQL one autocommit statement,
    ``app.services.job_insert``; on SQLite a transaction committed here); ``session`` only reads, for
    an Idempotency-Key, a data set, or to explain a refused INSERT.

    Returns:
        The job (the values inserted, or an earlier request's row) and whether it was created now
        (False: an earlier request with the same key made it).

    Raises:
        NotFound: the model is not the tenant's. TooManyJobs: the tenant's unfinished jobs are at
        its limit. InvalidWebhook: the callback URL is refused. InvalidJobSpec: over ``limits``, or
        ``device: cuda`` where nothing can run it (``cuda_available`` False), or ``mlflow`` on a server
        that does not track (``mlflow_experiment`` None; set, it is the experiment of jobs naming
        none). And the spec's validation errors.
    """
    tenant_id = principal.tenant_id
    # Only an Idempotency-Key is ever compared with the request it came with: without one, no hash.
    digest = request_hash(body) if idempotency_key else None
    if idempotency_key and digest and (existing := _replay(session, tenant_id, idempotency_key, digest)):
        return existing, False
    model = models.get(connection, body.model_id, tenant_id) if is_id(body.model_id) else None
    if model is None:
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
    now = utcnow()
    job = JobRecord(
        id=new_id(),
        status=JobStatus.QUEUED.value,
        stage=None,
        progress=0.0,
        model_id=model.id,
        spec=spec,
        device=body.device,
        queue="gpu" if body.device == "cuda" else "cpu",
        error_type=None,
        error_message=None,
        metrics=None,
        result=None,
        attempt=0,
        max_attempts=max_attempts,
        cancel_requested=False,
        webhook=webhook,
        mlflow=mlflow,
        created_at=now,
        started_at=None,
        finished_at=None,
        updated_at=now,
    )
    asked = {"tenant_id": tenant_id, "idempotency_key": idempotency_key, "request_hash": digest}
    row = {name: asked[name] if name in asked else getattr(job, name) for name in JOB_COLUMNS}
    try:
        with writer_turn(connection.engine):
            insert_queued_job(connection, row, limit=principal.max_concurrent_jobs)
            connection.commit()  # nothing left to commit on PostgreSQL's autocommit connection
    except TooManyJobs:
        connection.rollback()  # SQLite's tenant lock goes before the 429 is written
        raise
    except IntegrityError:
        connection.rollback()
        stored = session.get(Job, job.id)
        if stored is not None and stored.tenant_id == tenant_id:
            # Its id was new: a first try that committed before its connection died (job_insert).
            return stored, True
        # Lost a race with a concurrent request carrying the same key: answer with its job.
        winner = _replay(session, tenant_id, idempotency_key, digest) if idempotency_key and digest else None
        if winner is not None:
            return winner, False
        if session.get(Model, model.id) is None:  # removed after this process cached it
            models.forget(model.id)
            raise NotFound(f"no model with id {body.model_id!r}", errors=[{"field": "model_id"}]) from None
        raise
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
