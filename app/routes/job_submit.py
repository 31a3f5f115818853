"""``POST /v1/jobs``: queueing a job, and the route that takes a well-formed submit past FastAPI.

FastAPI's own route (``app.routes.jobs.submit_job``) documents the operation and handles every
request; but solving its parameters (the JSON body read with ``json.loads`` and validated as Python,
the Idempotency-Key header, the dependencies' caches) and its routing layers cost 0.45 ms of the
API's CPU per submit, a quarter of it (benchmarks/api_load.py, distributed, 1 worker: 1.7-1.8 against
1.2-1.3 ms). :data:`FAST_SUBMIT` is matched before it: a body sent as ``application/json`` that
``JobIn`` validates straight from its bytes, with a well-formed Idempotency-Key if any, is queued
here (authenticated once, by the same dependency function). Anything else, an unreadable body or a
missing field, is handed to FastAPI's route with the body replayed, so each refusal is FastAPI's
own 422 and nothing is answered twice.
"""

from __future__ import annotations

import contextlib
import logging

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from app.auth.principal import Principal, authenticate
from app.conditional import JSON
from app.schemas.jobs import JobIn, job_json
from app.services.bounds import JobLimits, cuda_present
from app.services.jobs import create_job
from core.dispatch import Dispatcher
from core.settings import Settings

log = logging.getLogger(__name__)

PATH = "/v1/jobs"
IDEMPOTENCY_KEY_MAX_LENGTH = 255
_HANDED_ON = "nncompress.submit_handed_on"


def queue_job(state: State, principal: Principal, body: JobIn, idempotency_key: str | None) -> Response:
    """Validates and queues the job (or replays the Idempotency-Key's): the 202 answer. Blocks: run it
    in a thread."""
    # The job is written on the read engine's connection (autocommit, no pre-ping: one round trip on
    # PostgreSQL); the session only connects when a submit needs more than that (create_job).
    settings: Settings = state.settings
    dispatcher: Dispatcher = state.dispatcher
    with state.session_factory() as session, state.read_engine.connect() as connection:
        job, created = create_job(
            session=session,
            connection=connection,
            principal=principal,
            body=body,
            idempotency_key=idempotency_key,
            max_attempts=settings.max_attempts,
            webhook_allow_private=settings.webhook_allow_private,
            limits=JobLimits.from_settings(settings),
            # Only a server that runs jobs itself knows no worker can take a cuda job; elsewhere the
            # reconciler fails it (no_worker) if no gpu worker shows up.
            cuda_available=not getattr(dispatcher, "runs_in_process", False) or cuda_present(),
            mlflow_experiment=settings.mlflow_experiment if settings.mlflow_tracking_uri else None,
        )
        # The JSON bytes directly, as the polled routes do: FastAPI would validate the model again.
        # Written before the session closes: a replayed job is a row that may still load artifacts.
        content = job_json(job)
    headers = {"Location": f"{PATH}/{job.id}"}
    if created:
        log.info("job queued", extra={"job_id": job.id, "tenant": principal.tenant_name})
        try:
            dispatcher.enqueue(job.id, queue=job.queue)
        except Exception:  # the job is committed as queued; the reconciler publishes it later
            log.warning("could not enqueue job %s now; the reconciler will", job.id, exc_info=True)
    else:
        headers["Idempotent-Replayed"] = "true"
    return Response(content, status_code=202, media_type=JSON, headers=headers)


def _is_json(content_type: str | None) -> bool:
    # Narrower than what FastAPI reads as JSON (any application/*+json): the rest is handed on.
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json"


class _FastSubmit:
    """The ASGI app of :data:`FAST_SUBMIT` (an instance, not a function: Starlette hands a function
    a Request and expects a Response back, which handing on could not give). Its errors (401, 429,
    the engine's 422) reach the app's exception handlers as those of any route do."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _submit(scope, receive, send)


async def _submit(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    body_bytes = await request.body()
    key = request.headers.get("idempotency-key")
    body = None
    if _is_json(request.headers.get("content-type")) and (
        key is None or 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH
    ):
        # A refusal is FastAPI's to word (below): this only says the body is not the plain case.
        with contextlib.suppress(ValidationError):
            body = JobIn.model_validate_json(body_bytes)
    if body is None:
        await _hand_on(scope, receive, send, body_bytes)
        return
    principal = await authenticate(request)
    response: Response = await run_in_threadpool(queue_job, request.app.state, principal, body, key)
    await response(scope, receive, send)


async def _hand_on(scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
    """Runs FastAPI's route for this request, its body (already read here) replayed to it."""
    scope[_HANDED_ON] = True
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()  # past the body only a disconnect can come
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    await scope["app"].router(scope, replay, send)


class _SubmitRoute(Route):
    """Matches ``POST /v1/jobs`` unless the request is being handed on to FastAPI's route; puts
    itself in the scope as FastAPI's routes do (the metrics and access log read its path)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # Only a full match: on another method FastAPI's routes of the path answer the 405 and its
        # Allow header (GET, POST), which this route alone would give as POST.
        if scope.get(_HANDED_ON) or scope.get("method") != "POST":
            return Match.NONE, {}
        match, child = super().matches(scope)
        if match is Match.FULL:
            child["route"] = self
        return match, child


FAST_SUBMIT = _SubmitRoute(PATH, _FastSubmit(), methods=["POST"], include_in_schema=False)
