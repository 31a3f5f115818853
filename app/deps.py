"""FastAPI dependencies as ``Annotated`` aliases: settings, session, storage, the calling tenant, and
rows loaded within that tenant or 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth.principal import CurrentPrincipal, Principal, authenticate
from core.db.models import Job, Model
from core.db.types import is_id
from core.dispatch import Dispatcher
from core.errors import NotFound
from core.settings import Settings
from core.storage import Storage

# The dependencies below that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in
# the threadpool, a hop that cost more than the work of a whole cached poll (benchmarks/api_load.py).


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request, closed afterwards; services commit explicitly.

    Creating a session does no I/O (it connects on first use, in the sync route's thread); closing
    it may (a rollback), so that runs in the threadpool.
    """
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        await run_in_threadpool(session.close)


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def get_dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with (``create_app``).

    Read from the app rather than overriding ``get_settings``: while any dependency override is
    set, FastAPI inspects every dependency's signature again on every request (measured: most of
    a job poll's time).
    """
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def load_or_404(session: Session, table: type[Any], id: str, what: str, tenant_id: str) -> Any:
    """The row of ``table`` with ``id`` if it belongs to the tenant; another tenant's row is a 404 too."""
    row = session.get(table, id) if is_id(id) else None
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"no {what} with id {id[:64]!r}")
    return row


def get_current_job(
    session: SessionDep, principal: CurrentPrincipal, job_id: Annotated[str, Path(max_length=64)]
) -> Job:
    job: Job = load_or_404(session, Job, job_id, "job", principal.tenant_id)
    return job


def get_current_model(
    session: SessionDep, principal: CurrentPrincipal, model_id: Annotated[str, Path(max_length=64)]
) -> Model:
    model: Model = load_or_404(session, Model, model_id, "model", principal.tenant_id)
    return model


CurrentJob = Annotated[Job, Depends(get_current_job)]
CurrentModel = Annotated[Model, Depends(get_current_model)]


__all__ = [
    "CurrentJob",
    "CurrentModel",
    "CurrentPrincipal",
    "DispatcherDep",
    "Principal",
    "SessionDep",
    "SettingsDep",
    "StorageDep",
    "authenticate",
]
