"""A cuda job that no worker can run fails ``no_worker`` after ``no_worker_seconds`` instead of
waiting in ``queued`` forever (reconciler pass), on SQLite and PostgreSQL; and the Celery worker's
beat records which queues it serves, in a real Redis."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import update

from core.db.models import Job
from core.db.types import utcnow
from tests.workers.conftest import Jobs, RedisServer
from workers.no_worker import NO_WORKER
from workers.reconciler import Reconciler


def _age(jobs: Jobs, job_id: str, seconds: float) -> None:
    with jobs.session_factory() as session:
        then = utcnow() - timedelta(seconds=seconds)
        session.execute(update(Job).where(Job.id == job_id).values(created_at=then, updated_at=then))
        session.commit()


def _reconciler(jobs: Jobs, seen: dict[str, float]) -> Reconciler:
    return Reconciler(
        session_factory=jobs.session_factory,
        publish=lambda job_id, queue: None,
        queue_depth=lambda queue: None,
        interval_seconds=1,
        unclaimed_after_seconds=3600,  # no re-publishing in these tests
        queue_seen_at=seen.get,
        no_worker_seconds=600,
    )


def test_gpu_job_without_gpu_workers_fails_no_worker(db_jobs: Jobs) -> None:
    old_gpu = db_jobs.create(queue="gpu")
    new_gpu = db_jobs.create(queue="gpu")
    old_cpu = db_jobs.create(queue="cpu")
    _age(db_jobs, old_gpu, 601)
    _age(db_jobs, old_cpu, 601)
    _reconciler(db_jobs, {}).run_once()
    failed = db_jobs.get(old_gpu)
    assert (failed.status, failed.error_type) == ("failed", NO_WORKER)
    assert failed.finished_at is not None and "gpu" in (failed.error_message or "")
    assert [e.type for e in db_jobs.events(old_gpu)][-1] == "failed"
    assert db_jobs.get(new_gpu).status == "queued"  # has not waited no_worker_seconds yet
    assert db_jobs.get(old_cpu).status == "queued"  # only the gpu queue is watched


def test_gpu_job_waits_while_a_gpu_worker_is_alive(db_jobs: Jobs) -> None:
    job_id = db_jobs.create(queue="gpu")
    _age(db_jobs, job_id, 3600)
    _reconciler(db_jobs, {"gpu": time.time() - 30}).run_once()  # a busy gpu worker beat 30 s ago
    assert db_jobs.get(job_id).status == "queued"
    _reconciler(db_jobs, {"gpu": time.time() - 601}).run_once()  # its last beat is too old now
    assert db_jobs.get(job_id).error_type == NO_WORKER


def test_worker_beat_records_its_queues_in_redis(redis_server: RedisServer) -> None:
    from core.settings import Settings
    from workers.celery_app import consumed_queues, create_celery_app, queue_seen_at, worker_beat

    app = create_celery_app(Settings(broker_url=redis_server.url))
    app.amqp.queues.select(["gpu"])  # what `celery worker -Q gpu` does
    assert consumed_queues(app) == ["gpu"]
    assert queue_seen_at(app, "gpu") is None
    before = time.time()
    worker_beat(app, "w1", interval_seconds=5, no_worker_seconds=600)
    seen = queue_seen_at(app, "gpu")
    assert seen is not None and seen >= before - 1
    assert queue_seen_at(app, "cpu") is None
