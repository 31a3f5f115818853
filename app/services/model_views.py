"""What a submit needs of a model (owner, format, architecture, intake's description), cached per process.

A model row never changes after intake (no route updates one), so a submit need not read it again:
the first submit for a model reads these columns with one Core query, the next ones take them from
a bounded in-process cache. Measured on this 2-core machine (``/work`` bench of ``create_job`` on
PostgreSQL): the ORM ``session.get`` of the model was 16% of a submit's CPU. A model removed from
the database after it was cached cannot get a job by mistake: the job's foreign key refuses the
INSERT, which ``app.services.jobs`` answers with the same 404 as an unknown id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, select

from app.services.lru import Lru
from core.db.models import Model

_MODELS = Model.__table__
_READ = select(
    _MODELS.c.id, _MODELS.c.tenant_id, _MODELS.c.format, _MODELS.c.architecture, _MODELS.c.details
).where(_MODELS.c.id == bindparam("model_id"))
MAX_ENTRIES = 1024


@dataclass(frozen=True)
class ModelView:
    """The columns of a model that job validation reads (``app.services.validation``)."""

    id: str
    tenant_id: str
    format: str
    architecture: str | None
    details: dict[str, Any] | None


class ModelViews:
    """A bounded cache of :class:`ModelView` by model id, shared by the API's threads."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: Lru[str, ModelView] = Lru(max_entries)

    def get(self, connection: Connection, model_id: str, tenant_id: str) -> ModelView | None:
        """The tenant's model ``model_id``, or None when there is none (or it is another tenant's)."""
        view = self._entries.get(model_id)
        if view is None:
            row = connection.execute(_READ, {"model_id": model_id}).one_or_none()
            if row is None:
                return None
            view = ModelView(row.id, row.tenant_id, row.format, row.architecture, row.details)
            self._entries.put(model_id, view)
        return view if view.tenant_id == tenant_id else None

    def forget(self, model_id: str) -> None:
        self._entries.pop(model_id)

    def __len__(self) -> int:
        return len(self._entries)
