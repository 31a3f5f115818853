"""What the API needs from the job queue, and how it finds the implementation without importing it.

The implementations live with the workers (``workers.dispatch``): Celery in distributed mode (where
the workers themselves publish new jobs from the database), a thread pool running jobs beside the
API in embedded mode. The web layer must not import the
workers package (``import-contracts.toml``), so it asks for a dispatcher by name through the entry
point group ``nncompress.dispatchers`` that ``pyproject.toml`` declares; a deployment could register
another queue the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Protocol

from sqlalchemy.orm import Session

from core.settings import Settings

__all__ = ["DISPATCHER_GROUP", "Dispatcher", "dispatcher_name", "make_dispatcher"]

DISPATCHER_GROUP = "nncompress.dispatchers"
SessionFactory = Callable[[], Session]


class Dispatcher(Protocol):
    """Hands queued job ids to workers (embedded thread pool or Celery); workers own the rest."""

    def enqueue(self, job_id: str, queue: str | None = None) -> None:
        """Wakes a worker for a job just committed as ``queued``; never raises for a broker outage.

        Embedded, it hands the id to the worker threads. Distributed (Celery), it does nothing: the
        committed row is enough, since the relay thread of every worker publishes new jobs to the
        broker (``workers.relay``). ``queue`` is the job's ``queue`` column where the caller has the
        row (the API, just after inserting it).
        """

    def start(self) -> None:
        """Starts background work (embedded: the worker threads and the reconciler)."""

    def stop(self) -> None:
        """Stops it; running embedded jobs are killed and handed back to the queue."""

    def check(self) -> None:
        """Raises when jobs cannot be dispatched (the broker is unreachable)."""


def dispatcher_name(settings: Settings) -> str:
    """``celery`` when a broker is configured, else ``embedded``."""
    return "celery" if settings.broker_url else "embedded"


def make_dispatcher(settings: Settings, session_factory: SessionFactory) -> Dispatcher:
    """The dispatcher registered under :func:`dispatcher_name`, built for ``settings``.

    Raises:
        RuntimeError: no installed package registers it (the project is not installed).
    """
    name = dispatcher_name(settings)
    found = entry_points(group=DISPATCHER_GROUP, name=name)
    if not found:
        raise RuntimeError(
            f"no {name!r} dispatcher in the entry point group {DISPATCHER_GROUP!r}: install the project "
            "(pip install -e .) so that its workers package registers one"
        )
    factory: Callable[[Settings, SessionFactory], Dispatcher] = next(iter(found)).load()
    return factory(settings, session_factory)
