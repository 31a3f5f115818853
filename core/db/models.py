"""Tables of the service: tenants and their API keys, uploaded models and data sets, jobs, job
events, artifacts, webhook deliveries and MLflow deliveries.

The database is the source of truth for job state (design §6): workers claim a job with one
conditional UPDATE on ``status``/``lease_*`` and write progress, stage, metrics and results here.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.db.types import UTCDateTime, new_id, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class StrEnum(str, Enum):
    """A str enum whose ``str()`` is its value (``enum.StrEnum`` needs Python 3.11)."""

    def __str__(self) -> str:
        return str(self.value)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Plain strings: an Enum member hashes by name, so ``"failed" in {JobStatus.FAILED}`` would be False.
FINISHED_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class EventType(StrEnum):
    CREATED = "created"
    CLAIMED = "claimed"
    STAGE = "stage"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    RETRIED = "retried"
    REQUEUED = "requeued"


def _one_of(column: str, values: type[Enum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Tenant(Base):
    """A team or pipeline that owns models and jobs; limits left NULL take the deployment's defaults."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    max_upload_bytes: Mapped[int | None] = mapped_column(BigInteger)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    # Signs webhook deliveries of jobs that bring no secret of their own ("whsec_" + base64).
    webhook_secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Its queued, running and cancelling jobs. Kept by triggers on jobs (migration 0007), never written
    # by the application: a submit reads it instead of counting the tenant's queue.
    unfinished_jobs: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class ApiKey(Base):
    """An API key: ``prefix`` finds the row, ``secret_hash`` (HMAC-SHA256, peppered) proves the key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()

    tenant: Mapped[Tenant] = relationship()


class Model(Base):
    """An uploaded model file: weights (with a registry architecture), ONNX, or an allowed pickle."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(16))
    architecture: Mapped[str | None] = mapped_column(String(128))
    filename: Mapped[str] = mapped_column(String(255))  # display only, never a path
    storage_key: Mapped[str] = mapped_column(String(512))
    # What intake learnt from the file at upload without running it (input spec, library, layer
    # names, build options): job validation and the job's example input read it; None for old rows.
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def summary(self) -> dict[str, Any] | None:
        """``details`` as the API shows it: without the layer list and storage keys."""
        if self.details is None:
            return None
        return {k: v for k, v in self.details.items() if k not in ("layers", "config_key")}

    @property
    def intake_format(self) -> str | None:
        """The ``fmt`` to pass to ``nncompress.io.intake.load_model`` for this file.

        ``format`` is the API's name for what the file holds; intake names containers. A
        ``state_dict`` is a ``torch_zip``; a ``pickle`` may be a raw pickle or a ``torch_zip`` holding
        a module, so None lets intake detect it again from the bytes.
        """
        return {"state_dict": "torch_zip", "pickle": None}.get(self.format, self.format)


class Dataset(Base):
    """An uploaded labelled data set (npz, MNIST idx pair, ImageFolder zip), validated at upload.

    ``files`` maps each uploaded part (``file``, ``labels``, ``val_file``, ``val_labels``) to its
    storage key, sha256, size and display name; ``summary`` is the loader's description
    (``LabelledDataset.describe()``), with the validation part's under ``val`` when one was given.
    """

    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_tenant_id_created_at", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(32))
    samples: Mapped[int] = mapped_column(Integer)
    val_samples: Mapped[int | None] = mapped_column(Integer)
    num_classes: Mapped[int] = mapped_column(Integer)
    sample_shape: Mapped[list[int]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    normalize: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    storage_key: Mapped[str] = mapped_column(String(512))
    files: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


_UNPUBLISHED = "published_at IS NULL AND status = 'queued'"


class Job(Base):
    """One compression job; ``status``/``lease_*`` are the claim protocol's fields."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_created_at_id", "created_at", "id"),
        CheckConstraint(_one_of("status", JobStatus), name="status"),
        CheckConstraint("queue IN ('cpu', 'gpu')", name="queue"),
        CheckConstraint("device IN ('cpu', 'cuda', 'auto')", name="device"),
        CheckConstraint("progress >= 0 AND progress <= 100", name="progress"),
        # Idempotency keys are per tenant: one tenant's key must neither collide with nor reveal another's.
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_jobs_tenant_id_status", "tenant_id", "status"),
        # The relay's lookup (workers.relay): only the few queued jobs whose message is not sent yet.
        Index(
            "ix_jobs_unpublished_created_at",
            "created_at",
            postgresql_where=text(_UNPUBLISHED),
            sqlite_where=text(_UNPUBLISHED),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    stage: Mapped[str | None] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    device: Mapped[str] = mapped_column(String(8), default="cpu")
    queue: Mapped[str] = mapped_column(String(8), default="cpu")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    last_finished_stage: Mapped[str | None] = mapped_column(String(16))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # {url, events, secret?}: where and what to deliver (core/webhooks); the secret is never shown back.
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # {experiment?, registered_model?} when the deployment tracks jobs in MLflow (core/tracking); else NULL.
    mlflow: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # When a worker's relay sent the job's message to the broker (workers.relay); NULL while queued
    # and not yet sent (and for jobs that ended before migration 0006). Retries and re-publications
    # by the reconciler leave it as it is.
    published_at: Mapped[datetime | None] = mapped_column()

    model: Mapped[Model] = relationship()
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="job", order_by="Artifact.name", cascade="all, delete-orphan"
    )

    @property
    def finished(self) -> bool:
        return str(self.status) in FINISHED_STATUSES


class JobEvent(Base):
    """One transition or progress note of a job; ``id`` orders events and is the stream cursor."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(16))
    progress: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Artifact(Base):
    """A file a job produced, stored under ``jobs/<job_id>/<name>`` and listed with its hash."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(128))
    storage_key: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="artifacts")


class WebhookDelivery(Base):
    """One attempt (or the next one, due at ``next_attempt_at``) to deliver one webhook message.

    ``message_id`` is the ``webhook-id`` header: the same for every attempt of a message, so a
    receiver can drop duplicates. A row with ``at`` NULL is pending; the deliverer claims it by
    setting ``at`` with a conditional UPDATE, then records ``status_code``/``error``/``delivered_at``.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_at_next_attempt_at", "at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(40))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    at: Mapped[datetime | None] = mapped_column()
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column()


class MlflowDelivery(Base):
    """One attempt (or the next one, due at ``next_attempt_at``) to log a finished job to MLflow.

    Written with the job's final transition, like a webhook delivery: a row with ``at`` NULL is
    pending, the logger claims it by setting ``at`` and records ``error`` or ``delivered_at`` with
    the run (and model version) it wrote.
    """

    __tablename__ = "mlflow_deliveries"
    __table_args__ = (Index("ix_mlflow_deliveries_at_next_attempt_at", "at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    at: Mapped[datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    experiment_id: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(32))
    delivered_at: Mapped[datetime | None] = mapped_column()
