"""Bodies of the /v1/jobs endpoints."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from math import copysign
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json

from app.services.job_reads import KEPT_ENTRIES, KEPT_JSON
from core.db.models import Job
from nncompress.finetune import FinetuneSpec
from nncompress.pipeline import STAGES, JobOptions, ScheduleSpec
from nncompress.quantize import QuantSpec

if TYPE_CHECKING:
    from app.services.job_reads import JobRecord, ListedJob

WebhookEvent = Literal["started", "stage_changed", "succeeded", "failed", "cancelled"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("started", "stage_changed", "succeeded", "failed", "cancelled")


class WebhookIn(BaseModel):
    """Where to POST the job's transitions; signed per Standard Webhooks with ``secret`` or the tenant's."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(min_length=8, max_length=2048, examples=["https://ci.example.com/hooks/nncompress"])
    events: list[WebhookEvent] = Field(default_factory=lambda: list(WEBHOOK_EVENTS), min_length=1)
    secret: str | None = Field(
        default=None,
        pattern=r"^whsec_[A-Za-z0-9+/]{32,}={0,2}$",
        description="'whsec_' + base64 of 24 to 64 random bytes; left out, the tenant's secret signs",
    )


class WebhookOut(BaseModel):
    url: str
    events: list[str]


class MlflowIn(BaseModel):
    """Where the job's MLflow run goes; the deployment's tracking server (MLFLOW_TRACKING_URI) takes it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    experiment: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        examples=["mnist-compression"],
        description="the experiment (created when missing); left out, the deployment's default",
    )
    registered_model: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9_.\- ]+$",
        examples=["mnist-net-pruned"],
        description="registers the compressed model as a new version of this model; null for none",
    )


class JobIn(BaseModel):
    """A compression job: which model, which pruner and config, and what to produce.

    Everything but ``model_id`` becomes the job's spec (``nncompress.pipeline.JobSpec``, which the
    worker runs): the fields below plus the keys of ``options``; left out, they take the engine's
    defaults. ``finetune``, ``schedule``, ``quantize`` and ``options`` are the engine's own spec
    models, so this schema is theirs; a value they refuse is a 422 ``invalid_config`` (or
    ``invalid_quant_config``) naming the dotted key and what was expected, as the engine says it.
    """

    # Strict: a JSON type other than the one documented is refused ("true" is no boolean, 28.0 no
    # dimension), as the schema says.
    model_config = ConfigDict(extra="forbid", strict=True)

    model_id: str = Field(min_length=1, max_length=64)
    pruner: str | None = Field(
        default="l1norm",
        min_length=1,
        max_length=64,
        examples=["l1norm"],
        description="null (or no config_list): no pruning, e.g. a quantize-only job",
    )
    config_list: list[Any] | None = Field(
        default=None, examples=[[{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}]]
    )
    speedup: bool = True
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    input_shape: list[int] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        examples=[[1, 1, 28, 28]],
        description="example input shape with batch dimension; defaults to the architecture's, or the "
        "one read from the uploaded model (ONNX inputs, a Hugging Face config)",
    )
    input_dtype: Literal["float32", "int64"] | None = Field(
        default=None,
        description="dtype of the example input: int64 for token ids; defaults to the model's "
        "(architecture, ONNX input or Hugging Face config), else float32",
    )
    export_onnx: bool = True
    verify: bool = True
    options: Annotated[JobOptions, JobOptions.raising_config_errors()] = Field(
        default_factory=JobOptions,
        examples=[{"seed": 0, "latency_runs": 20, "latency_batch_sizes": [1, 64]}],
        description="further engine options: seed, latency runs and batch sizes, latency dtype, a "
        "built-in data set",
    )
    webhook: WebhookIn | None = None
    mlflow: MlflowIn | None = Field(
        default=None,
        description="the run's experiment and the registered model, on a server with MLflow tracking "
        "(every job is logged there once it ends; this only names where)",
    )
    dataset_id: str | None = Field(
        default=None,
        max_length=64,
        description="an uploaded data set (POST /v1/datasets): data-driven pruners, fine-tuning, "
        "calibration and accuracy use it",
    )
    val_fraction: float = Field(
        default=0.1, gt=0, lt=1, description="held out for validation (seeded split) unless it has a val part"
    )
    finetune: Annotated[FinetuneSpec, FinetuneSpec.raising_config_errors()] | None = Field(
        default=None,
        examples=[
            {
                "epochs": 2,
                "batch_size": 64,
                "optimizer": "sgd",
                "lr": 0.01,
                "schedule": "cosine",
                "weight_decay": 0.0,
                "seed": 0,
                "distillation": {"weight": 0.5, "temperature": 4.0},
            }
        ],
        description="fine-tune after pruning (and between scheduled steps); null for none",
    )
    schedule: Annotated[ScheduleSpec, ScheduleSpec.raising_config_errors()] | None = Field(
        default=None,
        examples=[{"kind": "agp", "steps": 3, "accuracy_budget": 1.0}],
        description="scheduled pruning in steps with fine-tuning between them (needs finetune); "
        "null for one-shot pruning",
    )
    quantize: Annotated[QuantSpec, QuantSpec.raising_config_errors()] | None = Field(
        default=None,
        examples=[{"mode": "static", "config_list": [{"op_types": ["default"]}], "calibration_batches": 8}],
        description="int8 quantization after pruning and fine-tuning; the artifact is model.int8.onnx",
    )


class JobError(BaseModel):
    type: str
    message: str | None


class ArtifactOut(BaseModel):
    name: str
    size_bytes: int
    sha256: str
    media_type: str
    url: str


class JobOut(BaseModel):
    """A job with its progress, outcome, metrics and artifacts."""

    id: str
    status: str
    stage: str | None
    # The engine's list itself, so a client (the dashboard) orders stages without a copy of its own.
    stages: list[str] = Field(
        default_factory=lambda: list(STAGES),
        description="every stage in the order the engine runs them; a job passes through those its "
        "spec needs, and `stage` is one of them",
        examples=[list(STAGES)],
    )
    progress: float
    model_id: str
    spec: dict[str, Any]
    device: str
    queue: str
    error: JobError | None
    metrics: dict[str, Any] | None = Field(description="{before: {...}, after: {...}} once measured")
    result: dict[str, Any] | None
    artifacts: list[ArtifactOut]
    attempt: int
    max_attempts: int
    cancel_requested: bool
    webhook: WebhookOut | None = None
    mlflow: dict[str, Any] | None = Field(
        default=None,
        description="{experiment, registered_model?}: where the job is logged (see mlflow-deliveries)",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    type: str
    status: str
    stage: str | None
    progress: float | None
    message: str | None
    data: dict[str, Any] | None


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: int | None = Field(
        description="pass as ?after= to get later events; stays at the last seen id when none are new"
    )


def job_out(job: Job | JobRecord) -> JobOut:
    """The API view of a job row (artifacts with their download URLs)."""
    error = JobError(type=job.error_type, message=job.error_message) if job.error_type else None
    artifacts = [
        ArtifactOut(
            name=a.name,
            size_bytes=a.size_bytes,
            sha256=a.sha256,
            media_type=a.media_type,
            url=f"/v1/jobs/{job.id}/artifacts/{a.name}",
        )
        for a in job.artifacts
    ]
    return JobOut(
        id=job.id,
        status=job.status,
        stage=job.stage,
        progress=job.progress,
        model_id=job.model_id,
        spec=job.spec,
        device=job.device,
        queue=job.queue,
        error=error,
        metrics=job.metrics,
        result=job.result,
        artifacts=artifacts,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        cancel_requested=job.cancel_requested,
        webhook=WebhookOut(url=job.webhook["url"], events=job.webhook["events"]) if job.webhook else None,
        mlflow=job.mlflow,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
    )


# The polled routes serialise what they read straight to JSON: the values come from our own rows, so
# validating them into a JobOut first (what job_out does) only spent CPU. The bytes are the ones
# JobOut.model_dump_json writes (tests/app/test_job_json.py compares them): the keys in the model's
# field order, and NaN or infinity written as null, as pydantic does for a model by default.
_STAGES = list(STAGES)


def job_dict(job: Job | JobRecord) -> dict[str, Any]:
    """The API view of a job as plain values, keyed and ordered like :class:`JobOut`'s fields."""
    id = job.id
    webhook = job.webhook
    return {
        "id": id,
        "status": job.status,
        "stage": job.stage,
        "stages": _STAGES,
        "progress": float(job.progress),
        "model_id": job.model_id,
        "spec": job.spec,
        "device": job.device,
        "queue": job.queue,
        "error": {"type": job.error_type, "message": job.error_message} if job.error_type else None,
        "metrics": job.metrics,
        "result": job.result,
        "artifacts": [
            {
                "name": a.name,
                "size_bytes": a.size_bytes,
                "sha256": a.sha256,
                "media_type": a.media_type,
                "url": f"/v1/jobs/{id}/artifacts/{a.name}",
            }
            for a in job.artifacts
        ],
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "webhook": {"url": webhook["url"], "events": webhook["events"]} if webhook else None,
        "mlflow": job.mlflow,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "updated_at": job.updated_at,
    }


def job_json(job: Job | JobRecord) -> bytes:
    """``job_out(job).model_dump_json()``, byte for byte, without building the models."""
    return to_json(job_dict(job), inf_nan_mode="null")


# A listed job's JSON columns are JSON bytes already (ListedJob): its JSON is written with 0 in their
# place, then split at those members and joined again with the bytes in their place. The markers are
# only ever such members: inside a JSON string every quote is escaped, so `"spec":` cannot occur
# there, and no other object of a job (its error, artifacts) has these keys. Each job has each marker
# once, in this order (metrics and result, webhook and mlflow are adjacent fields).
_SPEC = b',"spec":0,'
_METRICS_RESULT = b',"metrics":0,"result":0,'
_WEBHOOK_MLFLOW = b',"webhook":0,"mlflow":0,'


def job_page_json(jobs: list[ListedJob], next_cursor: str | None) -> bytes:
    """A :class:`JobPage` of ``jobs`` as JSON, the bytes ``JobPage.model_dump_json`` writes."""
    items = b",".join([_job_json_of(job) for job in jobs])
    return b'{"items":[' + items + b'],"next_cursor":' + to_json(next_cursor) + b"}"


def _job_json_of(job: ListedJob) -> bytes:
    # Equal listed jobs are written alike but for the sign of a zero progress (0.0 == -0.0).
    sign = copysign(1.0, job.progress)
    if len(job.spec) + len(job.metrics) + len(job.result) + len(job.error_message or "") > KEPT_JSON:
        return _listed_job_json.__wrapped__(job, sign)
    return _listed_job_json(job, sign)


# A job's JSON is a function of its ListedJob, so a page read again unchanged (as polling reads it)
# is written from the JSON of its jobs at the cost of a hash each (see KEPT_JSON for its bounds).
@lru_cache(maxsize=KEPT_ENTRIES)
def _listed_job_json(job: ListedJob, _progress_sign: float) -> bytes:
    # job_dict reads the fields by name; the JSON ones (a webhook's it would read as a dict) are put
    # back as they are listed below.
    item = job_dict(job._replace(webhook=b""))  # type: ignore[arg-type]
    item["spec"] = item["metrics"] = item["result"] = item["webhook"] = item["mlflow"] = 0
    # Unpacking fails (ValueError) if a marker were ever found other than once.
    head, rest = to_json(item, inf_nan_mode="null").split(_SPEC)
    middle, rest = rest.split(_METRICS_RESULT)
    more, tail = rest.split(_WEBHOOK_MLFLOW)
    return b"".join(
        (
            head, b',"spec":', job.spec, b",",
            middle, b',"metrics":', job.metrics, b',"result":', job.result, b",",
            more, b',"webhook":', job.webhook, b',"mlflow":', job.mlflow, b",",
            tail,
        )
    )  # fmt: skip


class WebhookDeliveryOut(BaseModel):
    """One attempt to deliver a webhook message (``message_id`` is its ``webhook-id``)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    message_id: str
    event: str
    attempt: int
    next_attempt_at: datetime
    at: datetime | None = Field(description="when the attempt was made; null while it waits")
    status_code: int | None
    error: str | None
    delivered_at: datetime | None


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDeliveryOut]


class MlflowDeliveryOut(BaseModel):
    """One attempt to log the finished job to MLflow, with the run (and model version) it wrote."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    attempt: int
    next_attempt_at: datetime
    at: datetime | None = Field(description="when the attempt was made; null while it waits")
    error: str | None
    experiment_id: str | None
    run_id: str | None
    model_version: str | None
    delivered_at: datetime | None


class MlflowDeliveryPage(BaseModel):
    items: list[MlflowDeliveryOut]
