"""/v1/jobs: create (idempotent), list, read, events (paged and live), cancel."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import Field, TypeAdapter, ValidationError

from app.conditional import IF_NONE_MATCH_PARAMETER, NOT_MODIFIED, if_none_match, json_or_not_modified
from app.deps import CurrentJob, CurrentPrincipal, SessionDep
from app.openapi import engine_errors, problems
from app.routes.job_submit import IDEMPOTENCY_KEY_MAX_LENGTH, queue_job
from app.schemas.jobs import (
    EventOut,
    EventPage,
    JobIn,
    JobOut,
    JobPage,
    MlflowDeliveryOut,
    MlflowDeliveryPage,
    WebhookDeliveryOut,
    WebhookDeliveryPage,
    job_json,
    job_out,
    job_page_json,
)
from app.services.event_stream import job_event_stream
from app.services.job_reads import list_jobs, read_job
from app.services.jobs import cancel_job, list_deliveries, list_events, list_mlflow_deliveries
from app.services.pagination import CURSOR_PATTERN
from core.db.models import JobStatus
from core.errors import (
    IdempotencyConflict,
    InvalidCursor,
    InvalidInputShape,
    InvalidJobSpec,
    InvalidWebhook,
    JobFinished,
    NotFound,
    TooManyJobs,
)
from nncompress.datasets import DatasetError
from nncompress.errors import ConfigError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
EVENT_ID_MAX = 2**31 - 1  # job_events.id is a 32-bit integer column: a larger cursor names no event
SUBMIT_PROBLEMS = problems(
    NotFound,
    IdempotencyConflict,
    InvalidJobSpec,
    InvalidInputShape,
    InvalidWebhook,
    TooManyJobs,
    engine_errors(ConfigError),
    engine_errors(DatasetError),
)
log = logging.getLogger(__name__)


@router.post("", status_code=202, response_model=JobOut, responses=SUBMIT_PROBLEMS)
def submit_job(
    request: Request,
    body: JobIn,
    principal: CurrentPrincipal,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=IDEMPOTENCY_KEY_MAX_LENGTH)
    ] = None,
) -> Response:
    """Queue a compression job; the same Idempotency-Key with the same body returns the same job."""
    # Most submits never get here: app.routes.job_submit takes them first, this route has the rest.
    return queue_job(request.app.state, principal, body, idempotency_key)


# The two polled routes below are plain sync functions with only async dependencies: one threadpool
# hop for the whole request, like /healthz. They return the JSON bytes themselves (serialised once,
# hashed for the ETag) instead of a model FastAPI would validate and serialise again. They read
# If-None-Match (and the poll its job id) from the request rather than as parameters FastAPI looks
# up and validates on every request; ``openapi_extra`` declares them as FastAPI did.


@router.get(
    "",
    response_model=JobPage,
    responses={**problems(InvalidCursor), **NOT_MODIFIED},
    openapi_extra={"parameters": [IF_NONE_MATCH_PARAMETER]},
)
def get_jobs(
    request: Request,
    principal: CurrentPrincipal,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="opaque: a next_cursor")] = None,
) -> Response:
    """List jobs, newest first, optionally filtered by status (repeatable); cursor-paginated."""
    statuses = [s.value for s in status] if status else None
    with request.app.state.read_engine.connect() as connection:
        jobs, next_cursor = list_jobs(
            connection, tenant_id=principal.tenant_id, statuses=statuses, limit=limit, cursor=cursor
        )
    return json_or_not_modified(job_page_json(jobs, next_cursor), if_none_match(request))


JOB_ID_MAX_LENGTH = 64
_JOB_ID_PARAMETER = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": JOB_ID_MAX_LENGTH, "title": "Job Id"},
}
_JOB_ID = TypeAdapter[str](Annotated[str, Field(max_length=JOB_ID_MAX_LENGTH)])


def _job_id(request: Request) -> str:
    """The path's job id; one too long is refused (422) as FastAPI refuses a ``Path(max_length=64)``."""
    job_id: str = request.path_params["job_id"]
    if len(job_id) > JOB_ID_MAX_LENGTH:
        try:
            _JOB_ID.validate_python(job_id)
        except ValidationError as error:
            errors = [{**e, "loc": ("path", "job_id", *e["loc"])} for e in error.errors(include_url=False)]
            raise RequestValidationError(errors) from None
    return job_id


@router.get(
    "/{job_id}",
    response_model=JobOut,
    responses={**problems(NotFound), **NOT_MODIFIED},
    openapi_extra={"parameters": [_JOB_ID_PARAMETER, IF_NONE_MATCH_PARAMETER]},
)
def get_job(request: Request, principal: CurrentPrincipal) -> Response:
    """A job's status, stage, progress, error, metrics before/after and artifacts.

    Carries an ``ETag``; send it back in ``If-None-Match`` to get an empty 304 while nothing changed.
    """
    job_id = _job_id(request)
    with request.app.state.read_engine.connect() as connection:
        job = read_job(connection, tenant_id=principal.tenant_id, job_id=job_id)
    return json_or_not_modified(job_json(job), if_none_match(request))


@router.get("/{job_id}/events", response_model=EventPage, responses=problems(NotFound))
def get_job_events(
    job: CurrentJob,
    session: SessionDep,
    after: Annotated[int | None, Query(ge=0, le=EVENT_ID_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    """A job's events in order; poll with ?after=<next_cursor> for new ones."""
    events, next_cursor = list_events(session=session, job=job, after=after, limit=limit)
    return EventPage(items=[EventOut.model_validate(e) for e in events], next_cursor=next_cursor)


@router.get(
    "/{job_id}/events/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"},
        **problems(NotFound),
    },
)
def stream_job_events(
    job: CurrentJob,
    request: Request,
    after: Annotated[int | None, Query(ge=0, le=EVENT_ID_MAX)] = None,
    last_event_id: Annotated[int | None, Header(ge=0, le=EVENT_ID_MAX)] = None,
) -> StreamingResponse:
    """A live stream (SSE) of the job's events; ends after the job finishes; resumes at Last-Event-ID."""
    cursor = last_event_id if last_event_id is not None else (after or 0)
    return StreamingResponse(
        job_event_stream(request.app.state.session_factory, job.id, cursor),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/{job_id}/cancel", status_code=202, response_model=JobOut, responses=problems(NotFound, JobFinished)
)
def cancel(job: CurrentJob, session: SessionDep) -> JobOut:
    """Cancel a job: a queued one at once, a running one as soon as its worker kills the child."""
    return job_out(cancel_job(session=session, job=job))


@router.get("/{job_id}/webhook-deliveries", response_model=WebhookDeliveryPage, responses=problems(NotFound))
def get_webhook_deliveries(job: CurrentJob, session: SessionDep) -> WebhookDeliveryPage:
    """Every attempt to deliver the job's webhook messages: status code, error, when, what is pending."""
    rows = list_deliveries(session=session, job=job)
    return WebhookDeliveryPage(items=[WebhookDeliveryOut.model_validate(r) for r in rows])


@router.get("/{job_id}/mlflow-deliveries", response_model=MlflowDeliveryPage, responses=problems(NotFound))
def get_mlflow_deliveries(job: CurrentJob, session: SessionDep) -> MlflowDeliveryPage:
    """Every attempt to log the finished job to MLflow: the run and model version it wrote, or its error."""
    rows = list_mlflow_deliveries(session=session, job=job)
    return MlflowDeliveryPage(items=[MlflowDeliveryOut.model_validate(r) for r in rows])
