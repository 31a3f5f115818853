"""FastAPI dependencies as ``Annotated`` aliases: settings, session, storage, load-or-404 rows."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated, Any, Protocol

from fastapi import Depends, Header, Path, Request
from sqlalchemy.orm import Session

from app.db.models import Job, Model
from app.errors import NotFound, Unauthorized
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


def require_api_key(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """With ``settings.api_keys`` set, the request must carry ``Authorization: Bearer <one of them>``."""
    if not settings.api_keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not any(
        hmac.compare_digest(token.strip(), k) for k in settings.api_keys
    ):
        raise Unauthorized("send 'Authorization: Bearer <API key>'", headers={"WWW-Authenticate": "Bearer"})


SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def load_or_404(session: Session, table: type[Any], id: str, what: str) -> Any:
    row = session.get(table, id)
    if row is None:
        raise NotFound(f"no {what} with id {id!r}")
    return row


def get_current_job(session: SessionDep, job_id: Annotated[str, Path(max_length=64)]) -> Job:
    job: Job = load_or_404(session, Job, job_id, "job")
    return job


def get_current_model(session: SessionDep, model_id: Annotated[str, Path(max_length=64)]) -> Model:
    model: Model = load_or_404(session, Model, model_id, "model")
    return model


CurrentJob = Annotated[Job, Depends(get_current_job)]
CurrentModel = Annotated[Model, Depends(get_current_model)]
