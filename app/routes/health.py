"""/healthz, /readyz and /metrics for orchestrators and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.deps import DispatcherDep, SessionDep, StorageDep
from app.openapi import problems
from core.errors import NotReady

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (no dependency is checked)."""
    return {"status": "ok"}


@router.get("/readyz", responses=problems(NotReady))
def readyz(session: SessionDep, dispatcher: DispatcherDep, storage: StorageDep) -> dict[str, str]:
    """The database answers a query, the dispatcher reaches its broker (or local worker), storage is there."""
    failures: list[dict[str, str]] = []
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        failures.append({"component": "database", "message": str(exc).splitlines()[0]})
    try:
        dispatcher.check()
    except Exception as exc:  # any failure of the broker check means "not ready"
        failures.append({"component": "dispatcher", "message": str(exc) or type(exc).__name__})
    try:
        storage.check()
    except Exception as exc:  # a missing folder, an unreachable or refused bucket
        failures.append({"component": "storage", "message": str(exc) or type(exc).__name__})
    if failures:
        raise NotReady("; ".join(f"{f['component']}: {f['message']}" for f in failures), errors=failures)
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition", "content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    """Prometheus text: HTTP requests, jobs by status, queue depth, heartbeats, stage durations."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
