"""The service's database: SQLAlchemy 2 models, engine/session factories, events and migrations."""

from app.db.models import Artifact, Base, Job, JobEvent, Model
from app.db.session import make_engine, make_session_factory

__all__ = ["Artifact", "Base", "Job", "JobEvent", "Model", "make_engine", "make_session_factory"]
