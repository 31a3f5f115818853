"""The distributed mode under faults: real PostgreSQL, a real Redis of our own, real Celery workers.

Each test reproduces one of the pitfalls of design §6 and checks the job still ends right, once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core.settings import Settings
from tests.workers.conftest import (
    FAST,
    SEED_SPEC,
    Jobs,
    RedisServer,
    WorkerProcess,
    marker_lines,
    marker_runs,
    pid_alive,
    wait_for,
)
from workers.celery_app import create_celery_app, publish
from workers.dispatch import CeleryDispatcher
from workers.relay import Relay

pytestmark = [pytest.mark.service, pytest.mark.slow]

StartWorker = Callable[..., WorkerProcess]


def _dispatcher(settings: Settings, jobs: Jobs) -> CeleryDispatcher:
    return CeleryDispatcher(settings, jobs.session_factory)


def _relay_once(settings: Settings, jobs: Jobs) -> int:
    """One relay pass, as a worker's relay thread makes it, where no worker runs yet."""
    app = create_celery_app(settings)
    try:
        relay = Relay(jobs.session_factory, lambda job_id, queue: publish(app, job_id, queue), poll_seconds=1)
        return relay.run_once()
    finally:
        app.pool.force_close_all()


def test_job_runs_on_a_worker(celery_settings: Settings, pg_jobs: Jobs, start_worker: StartWorker) -> None:
    start_worker(celery_settings)
    dispatcher = _dispatcher(celery_settings, pg_jobs)
    dispatcher.check()
    job_id = pg_jobs.create(workload="sleep", seconds=0.5)  # the worker's relay publishes it
    job = pg_jobs.wait_status(job_id, {"succeeded", "failed"}, 60)
    assert job.status == "succeeded", job.error_message
    dispatcher.stop()


def test_check_raises_when_the_broker_is_down(pg_jobs: Jobs, tmp_path: Path) -> None:
    settings = Settings(
        database_url=pg_jobs.url, broker_url="redis://127.0.0.1:1/0", storage_dir=tmp_path, **FAST
    )
    dispatcher = _dispatcher(settings, pg_jobs)
    with pytest.raises(Exception):  # noqa: B017 - kombu raises OperationalError or a socket error
        dispatcher.check()
    job_id = pg_jobs.create()
    dispatcher.enqueue(job_id)  # publishes nothing (the workers' relays do), so a broker outage is moot
    assert pg_jobs.get(job_id).status == "queued"


def test_sigkilled_worker_group_job_finishes_on_a_restarted_worker(
    celery_settings: Settings, pg_jobs: Jobs, start_worker: StartWorker, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    worker = start_worker(celery_settings)
    job_id = pg_jobs.create(workload="sleep", seconds=4, marker=str(marker))
    ((pid, _),) = wait_for(lambda: marker_lines(marker), 60, "the job to start")
    wait_for(lambda: pg_jobs.get(job_id).last_finished_stage, 30, "the job to finish its first stage")
    worker.kill_group()
    # The job process lives in its own session; it must notice its supervisor is gone and die.
    wait_for(lambda: not pid_alive(pid), 10, "the orphaned job process to exit")
    killed = pg_jobs.get(job_id)
    assert killed.status == "running"
    start_worker(celery_settings)
    job = pg_jobs.wait_status(job_id, {"succeeded", "failed"}, 90)
    assert job.status == "succeeded", job.error_message
    runs = marker_runs(marker)
    assert [(attempt, resume) for _, attempt, resume in runs] == [(1, None), (2, killed.last_finished_stage)]
    assert "retried" in [e.type for e in pg_jobs.events(job_id)]


def test_sigkilled_worker_at_the_last_attempt_fails_worker_lost(
    celery_settings: Settings, pg_jobs: Jobs, start_worker: StartWorker, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    worker = start_worker(celery_settings)
    job_id = pg_jobs.create(workload="sleep", seconds=60, marker=str(marker), max_attempts=1)
    wait_for(lambda: marker_lines(marker), 60, "the job to start")
    worker.kill_group()
    start_worker(celery_settings)  # its reconciler finds the expired lease
    job = pg_jobs.wait_status(job_id, {"succeeded", "failed", "queued"}, 60)
    assert (job.status, job.error_type) == ("failed", "worker_lost")
    assert len(marker_lines(marker)) == 1


def test_redelivery_after_visibility_timeout_does_not_run_the_job_twice(
    celery_settings: Settings, pg_jobs: Jobs, start_worker: StartWorker, tmp_path: Path
) -> None:
    # Given two workers and a visibility timeout (2 s) far shorter than the job (8 s), Redis hands the
    # unacknowledged message to the other worker while the first still runs the job.
    settings = celery_settings.model_copy(update={"visibility_timeout_seconds": 2})
    marker = tmp_path / "runs"
    workers = [start_worker(settings, name="a"), start_worker(settings, name="b")]
    job_id = pg_jobs.create(workload="sleep", seconds=8, marker=str(marker))
    wait_for(lambda: any("not claimable" in w.log_text() for w in workers), 60, "a duplicate delivery")
    job = pg_jobs.wait_status(job_id, {"succeeded", "failed"}, 60)
    assert job.status == "succeeded", job.error_message
    assert len(marker_lines(marker)) == 1
    assert [e.type for e in pg_jobs.events(job_id)].count("claimed") == 1


def test_queued_job_survives_a_redis_restart_without_persistence(
    celery_settings: Settings, pg_jobs: Jobs, start_worker: StartWorker, redis_server: RedisServer
) -> None:
    import redis

    job_id = pg_jobs.create(workload="sleep", seconds=0.2)
    assert _relay_once(celery_settings, pg_jobs) == 1
    client = redis.Redis.from_url(redis_server.url)
    assert client.llen("cpu") == 1
    redis_server.stop()
    redis_server.start()
    assert client.llen("cpu") == 0  # the message is gone; the job row is still queued
    start_worker(celery_settings, celery_cli=True)  # a plain `celery -A workers.celery_app worker -Q cpu`
    job = pg_jobs.wait_status(job_id, {"succeeded", "failed"}, 60)
    assert job.status == "succeeded", job.error_message
    # The reconciler re-published it: the relay had already marked it published.
    assert "requeued" in [e.type for e in pg_jobs.events(job_id)]


def test_a_relay_that_died_before_publishing_leaves_the_job_to_the_reconciler(
    celery_settings: Settings, pg_jobs: Jobs, start_worker: StartWorker
) -> None:
    # Given a job a relay marked published and died before sending (no message anywhere), a worker's
    # relay skips it, and its reconciler publishes it once it is stale and missing from the queue.
    from sqlalchemy import update

    from core.db.models import Job
    from core.db.types import utcnow

    job_id = pg_jobs.create(workload="sleep", seconds=0.2)
    with pg_jobs.session_factory() as session:
        session.execute(update(Job).where(Job.id == job_id).values(published_at=utcnow()))
        session.commit()
    start_worker(celery_settings)
    job = pg_jobs.wait_status(job_id, {"succeeded", "failed"}, 60)
    assert job.status == "succeeded", job.error_message
    assert "requeued" in [e.type for e in pg_jobs.events(job_id)]


def test_cancel_a_running_job_kills_its_process(
    celery_settings: Settings, pg_jobs: Jobs, start_worker: StartWorker, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    worker = start_worker(celery_settings)
    job_id = pg_jobs.create(workload="sleep", seconds=60, marker=str(marker))
    ((pid, _),) = wait_for(lambda: marker_lines(marker), 60, "the job to start")
    pg_jobs.cancel(job_id)
    assert pg_jobs.wait_status(job_id, {"cancelled", "failed", "succeeded"}, 30).status == "cancelled"
    wait_for(lambda: not pid_alive(pid), 10, "the job process to be gone")
    assert worker.proc.poll() is None  # the worker itself lives on
    # ... and takes the next job.
    next_id = pg_jobs.create(workload="sleep", seconds=0.2)
    assert pg_jobs.wait_status(next_id, {"succeeded", "failed"}, 60).status == "succeeded"


def test_queued_job_survives_a_redis_restart_while_the_worker_is_busy(
    celery_settings: Settings,
    pg_jobs: Jobs,
    start_worker: StartWorker,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    # Given a worker busy with one job and a second job waiting in Redis, when Redis restarts empty,
    # then the worker reconnects, finishes the first job, and the reconciler re-publishes the second.
    marker = tmp_path / "runs"
    import redis

    start_worker(celery_settings)
    busy = pg_jobs.create(workload="sleep", seconds=3, marker=str(marker))
    wait_for(lambda: marker_lines(marker), 60, "the first job to start")
    waiting = pg_jobs.create(workload="sleep", seconds=0.2)
    client = redis.Redis.from_url(redis_server.url)
    wait_for(lambda: client.llen("cpu") == 1, 30, "the worker's relay to publish the second job")
    redis_server.stop()
    redis_server.start()
    for job_id in (busy, waiting):
        job = pg_jobs.wait_status(job_id, {"succeeded", "failed"}, 90)
        assert job.status == "succeeded", job.error_message
    assert len(marker_lines(marker)) == 1
    assert "requeued" in [e.type for e in pg_jobs.events(waiting)]


def test_cuda_jobs_go_to_the_gpu_queue(
    celery_settings: Settings, pg_jobs: Jobs, redis_server: RedisServer
) -> None:
    import redis

    pg_jobs.create(queue="gpu")
    pg_jobs.create(queue="cpu")
    assert _relay_once(celery_settings, pg_jobs) == 2
    client = redis.Redis.from_url(redis_server.url)
    assert (client.llen("gpu"), client.llen("cpu")) == (1, 1)


def test_killed_worker_resumes_the_real_pipeline_from_its_saved_masks(
    celery_settings: Settings, pg_jobs: Jobs, start_worker: StartWorker
) -> None:
    # Given the seed job on the real pipeline, when its worker is SIGKILLed after pruning finished,
    # then the retry on a new worker reuses the masks the first attempt saved instead of pruning again.
    from nncompress.pipeline import JobSpec

    worker = start_worker(celery_settings, target=None)
    model_id = pg_jobs.upload_seed_model()
    spec = JobSpec.from_dict({**SEED_SPEC, "latency_runs": 20}).to_dict()
    job_id = pg_jobs.create(model_id=model_id, **spec)

    def pruned() -> bool:
        job = pg_jobs.get(job_id)
        assert job.status == "running" or job.attempt == 0, f"the job ended before the kill: {job.status}"
        return job.last_finished_stage not in (None, "loading")

    wait_for(pruned, 120, "pruning to finish")
    worker.kill_group()
    start_worker(celery_settings, target=None)
    job = pg_jobs.wait_status(job_id, {"succeeded", "failed"}, 180)
    assert job.status == "succeeded", job.error_message
    assert job.attempt == 2
    assert job.result is not None
    assert any(note.startswith("resumed: reused the masks") for note in job.result["notes"]), job.result[
        "notes"
    ]
