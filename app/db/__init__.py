"""The service's database: SQLAlchemy 2 models, engine/session factories, events and migrations."""

from app.db.models import ApiKey, Artifact, Base, Job, JobEvent, Model, Tenant, WebhookDelivery
from app.db.session import make_engine, make_session_factory

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
