"""FastAPI dependencies as ``Annotated`` aliases: settings, session, storage, the calling tenant, and
rows loaded within that tenant or 404."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Protocol

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from app.auth.principal import CurrentPrincipal, Principal, authenticate
from app.db.models import Job, Model
from app.db.types import is_id
from app.errors import NotFound
from app.settings import Settings, get_settings
from app.storage import Storage


class Dispatcher(Protocol):
    """Hands queued job ids to workers (embedded thread pool or Celery); workers own the rest."""

    def enqueue(self, job_id: str) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def check(self) -> None: ...


def get_session(request: Request) -> Iterator[Session]:
    """A session per request, closed afterwards; services commit explicitly."""
    with request.app.state.session_factory() as session:
        yield session


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


def get_dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings)]


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
    "Dispatcher",
    "DispatcherDep",
    "Principal",
    "SessionDep",
    "SettingsDep",
    "StorageDep",
    "authenticate",
]
