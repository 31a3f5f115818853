"""tenants.unfinished_jobs is kept by triggers (migration 0007): whatever writes a job's status, the
count equals the tenant's queued, running and cancelling jobs, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, delete, func, select, text, update

from core.db.migrate import alembic_config, upgrade_to_head
from core.db.models import Job, Model, Tenant
from core.db.session import make_engine
from core.db.types import new_id, utcnow

UNFINISHED = ("queued", "running", "cancelling")


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    upgrade_to_head(empty_url)
    engine = make_engine(empty_url)
    yield engine
    engine.dispose()


def _tenant_and_model(engine: Engine, name: str) -> tuple[str, str]:
    tenant_id, model_id = new_id(), new_id()
    with engine.begin() as connection:
        connection.execute(
            Tenant.__table__.insert().values(id=tenant_id, name=name, webhook_secret="s", created_at=utcnow())
        )
        connection.execute(
            Model.__table__.insert().values(
                id=model_id,
                tenant_id=tenant_id,
                sha256="0" * 64,
                size_bytes=1,
                format="safetensors",
                filename="m.safetensors",
                storage_key="k",
                created_at=utcnow(),
            )
        )
    return tenant_id, model_id


def _add_job(engine: Engine, tenant_id: str, model_id: str, status: str = "queued") -> str:
    job_id, now = new_id(), utcnow()
    with engine.begin() as connection:
        connection.execute(
            Job.__table__.insert().values(
                id=job_id,
                tenant_id=tenant_id,
                model_id=model_id,
                status=status,
                progress=0.0,
                spec={},
                device="cpu",
                queue="cpu",
                attempt=0,
                max_attempts=3,
                cancel_requested=False,
                created_at=now,
                updated_at=now,
            )
        )
    return job_id


def _set(engine: Engine, job_id: str, **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(update(Job).where(Job.id == job_id).values(**values))


def _kept_and_counted(engine: Engine, tenant_id: str) -> tuple[int, int]:
    with engine.connect() as connection:
        kept = connection.execute(select(Tenant.unfinished_jobs).where(Tenant.id == tenant_id)).scalar_one()
        counted = connection.execute(
            select(func.count()).where(Job.tenant_id == tenant_id, Job.status.in_(UNFINISHED))
        ).scalar_one()
    return kept, counted


def test_the_count_follows_every_status_change(engine: Engine) -> None:
    alice, alices_model = _tenant_and_model(engine, "alice")
    bob, bobs_model = _tenant_and_model(engine, "bob")
    jobs = [_add_job(engine, alice, alices_model) for _ in range(3)]
    done = _add_job(engine, alice, alices_model, status="succeeded")  # inserted finished: not counted
    assert _kept_and_counted(engine, alice) == (3, 3)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("claimed (queued -> running)", lambda: _set(engine, jobs[0], status="running")),
        ("progress only", lambda: _set(engine, jobs[0], progress=0.5, stage="pruning")),
        ("succeeded", lambda: _set(engine, jobs[0], status="succeeded")),
        ("cancel requested", lambda: _set(engine, jobs[1], status="cancelling")),
        ("cancelled", lambda: _set(engine, jobs[1], status="cancelled")),
        ("retried after failing", lambda: _set(engine, jobs[1], status="queued")),
        ("a finished job changes finished status", lambda: _set(engine, done, status="failed")),
        ("deleted while queued", lambda: _delete(engine, jobs[2])),
        ("deleted when finished", lambda: _delete(engine, done)),
        ("moved to another tenant", lambda: _set(engine, jobs[1], tenant_id=bob, model_id=bobs_model)),
    ]
    expected = [(3, 0), (3, 0), (2, 0), (2, 0), (1, 0), (2, 0), (2, 0), (1, 0), (1, 0), (0, 1)]
    for (what, step), (alices, bobs) in zip(steps, expected, strict=True):
        step()
        assert _kept_and_counted(engine, alice) == (alices, alices), what
        assert _kept_and_counted(engine, bob) == (bobs, bobs), what


def _delete(engine: Engine, job_id: str) -> None:
    with engine.begin() as connection:
        connection.execute(delete(Job).where(Job.id == job_id))


def test_the_upgrade_counts_the_jobs_already_there(empty_url: str) -> None:
    command.upgrade(alembic_config(empty_url), "0006")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO tenants (id, name, webhook_secret, created_at) VALUES ('t1', 'a', 's', :now)"
                ),
                {"now": utcnow()},
            )
            connection.execute(
                text(
                    "INSERT INTO models (id, tenant_id, sha256, size_bytes, format, filename, storage_key, "
                    "created_at) VALUES ('m1', 't1', :sha, 1, 'safetensors', 'm', 'k', :now)"
                ),
                {"sha": "0" * 64, "now": utcnow()},
            )
            for i, status in enumerate(["queued", "running", "cancelling", "succeeded", "failed", "queued"]):
                connection.execute(
                    text(
                        "INSERT INTO jobs (id, tenant_id, model_id, status, progress, spec, device, queue, "
                        "attempt, max_attempts, cancel_requested, created_at, updated_at) VALUES "
                        "(:id, 't1', 'm1', :status, 0, '{}', 'cpu', 'cpu', 0, 3, false, :now, :now)"
                    ),
                    {"id": f"j{i}", "status": status, "now": utcnow()},
                )
        command.upgrade(alembic_config(empty_url), "head")
        assert _kept_and_counted(engine, "t1") == (4, 4)
        _set(engine, "j0", status="succeeded")
        assert _kept_and_counted(engine, "t1") == (3, 3)
    finally:
        engine.dispose()
