"""The service's database: SQLAlchemy 2 models, engine/session factories, events and migrations."""

from core.db.models import ApiKey, Artifact, Base, Job, JobEvent, Model, Tenant, WebhookDelivery
from core.db.session import make_engine, make_session_factory

__all__ = [
    "ApiKey",
    "Artifact",
    "Base",
    "Job",
    "JobEvent",
    "Model",
    "Tenant",
    "WebhookDelivery",
    "make_engine",
    "make_session_factory",
]
