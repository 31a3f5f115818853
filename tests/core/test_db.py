"""The models round-trip on both databases: UTC timestamps, JSON, constraints and events."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.tenants import DEFAULT_TENANT, get_or_create_tenant
from core.db.events import record_event
from core.db.models import EventType, Job, JobEvent, JobStatus, Model
from core.db.session import make_engine, make_session_factory


def _model(session: Session) -> Model:
    tenant, _ = get_or_create_tenant(session, DEFAULT_TENANT)
    return Model(
        tenant_id=tenant.id,
        sha256="0" * 64,
        size_bytes=1,
        format="safetensors",
        filename="m",
        storage_key="k",
    )


def test_job_round_trip_keeps_utc_and_json(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    plus_two = timezone(timedelta(hours=2))
    with sessions() as session:
        model = _model(session)
        session.add(model)
        session.flush()
        job = Job(
            tenant_id=model.tenant_id,
            model_id=model.id,
            spec={"config_list": [{"sparse_ratio": 0.5}]},
            max_attempts=3,
        )
        job.lease_expires_at = datetime(2030, 1, 1, 12, tzinfo=plus_two)
        session.add(job)
        session.flush()
        record_event(session, job, EventType.CREATED, "queued", {"k": 1})
        session.commit()
        job_id = job.id
    with sessions() as session:
        job = session.get_one(Job, job_id)
        assert job.status == "queued" and job.progress == 0.0 and job.attempt == 0
        assert job.cancel_requested is False
        assert job.spec == {"config_list": [{"sparse_ratio": 0.5}]}
        assert job.created_at.tzinfo is not None and job.created_at.utcoffset() == timedelta(0)
        assert job.lease_expires_at == datetime(2030, 1, 1, 10, tzinfo=timezone.utc)
        expired = session.scalars(select(Job).where(Job.lease_expires_at < datetime(2030, 1, 1, 11))).all()
        assert [j.id for j in expired] == [job_id]
        (event,) = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).all()
        assert (event.type, event.status, event.stage) == ("created", "queued", None)
        assert (event.message, event.data) == ("queued", {"k": 1})
    engine.dispose()


def test_idempotency_key_is_unique_per_tenant(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        model = _model(session)
        session.add(model)
        session.flush()
        session.add(Job(tenant_id=model.tenant_id, model_id=model.id, spec={}, idempotency_key="k1"))
        session.commit()
        session.add(Job(tenant_id=model.tenant_id, model_id=model.id, spec={}, idempotency_key="k1"))
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        other, _ = get_or_create_tenant(session, "other-team")
        session.add(Job(tenant_id=other.id, model_id=model.id, spec={}, idempotency_key="k1"))
        session.commit()  # another tenant's key of the same name is no conflict
    engine.dispose()


def test_status_check_and_foreign_key_are_enforced(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        tenant_id = get_or_create_tenant(session, DEFAULT_TENANT)[0].id
        session.add(Job(tenant_id=tenant_id, model_id="f" * 32, spec={}))
        with pytest.raises(IntegrityError):
            session.commit()
    with sessions() as session:
        model = _model(session)
        session.add(model)
        session.flush()
        session.add(Job(tenant_id=model.tenant_id, model_id=model.id, spec={}, status="exploded"))
        with pytest.raises(IntegrityError):
            session.commit()
    assert str(JobStatus.RUNNING) == "running"
    engine.dispose()
