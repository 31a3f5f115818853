"""The relay: workers publish the jobs the API committed, each once, woken by PostgreSQL's NOTIFY.

Passes run on SQLite and PostgreSQL; the LISTEN wake-up, the broker messages and the API's submit
use the real PostgreSQL and a private Redis.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from core.db.models import Job
from core.settings import Settings
from tests.app.factories import job_body, uploaded_mnist
from tests.conftest import bearer
from tests.workers.conftest import Jobs, RedisServer, wait_for
from workers.relay import Relay, listen_conninfo

pytestmark = pytest.mark.service


class Recorder:
    """A publish callable that records ``(job_id, queue)`` and can fail its first calls."""

    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail_first = fail_first
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def __call__(self, job_id: str, queue: str) -> None:
        with self._lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                raise ConnectionError("broker down")
            self.sent.append((job_id, queue))
            self._changed.notify_all()

    def wait_for(self, job_id: str, timeout: float) -> bool:
        with self._lock:
            return self._changed.wait_for(lambda: any(j == job_id for j, _ in self.sent), timeout)


def _relay(jobs: Jobs, publish: Callable[[str, str], None], **kwargs: Any) -> Relay:
    return Relay(session_factory=jobs.session_factory, publish=publish, **{"poll_seconds": 1.0, **kwargs})


@pytest.fixture
def running() -> Iterator[list[Relay]]:
    """Relays a test started; stopped at teardown."""
    relays: list[Relay] = []
    yield relays
    for relay in relays:
        relay.stop()


def test_a_pass_publishes_each_queued_job_once_to_its_queue(db_jobs: Jobs) -> None:
    cpu, gpu = db_jobs.create(queue="cpu"), db_jobs.create(queue="gpu")
    updated_at = db_jobs.get(cpu).updated_at
    recorder = Recorder()
    relay = _relay(db_jobs, recorder)
    assert relay.run_once() == 2
    assert sorted(recorder.sent) == sorted([(cpu, "cpu"), (gpu, "gpu")])
    assert relay.run_once() == 0  # published_at is set: nothing is sent twice
    assert len(recorder.sent) == 2
    job = db_jobs.get(cpu)
    assert job.published_at is not None
    assert job.updated_at == updated_at  # bookkeeping only: the job as clients see it is unchanged


def test_jobs_that_left_the_queue_are_not_published(db_jobs: Jobs) -> None:
    job_id = db_jobs.create()
    with db_jobs.session_factory() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status = "cancelled"
        session.commit()
    recorder = Recorder()
    assert _relay(db_jobs, recorder).run_once() == 0
    assert recorder.sent == []


def test_a_full_batch_is_followed_by_another_pass(db_jobs: Jobs) -> None:
    created = {db_jobs.create() for _ in range(5)}
    recorder = Recorder()
    relay = _relay(db_jobs, recorder, batch=2)
    assert [relay.run_once() for _ in range(4)] == [2, 2, 1, 0]
    assert {job_id for job_id, _ in recorder.sent} == created


def test_concurrent_relays_publish_each_job_once(db_jobs: Jobs) -> None:
    created = {db_jobs.create() for _ in range(60)}
    recorder = Recorder()
    relays = [_relay(db_jobs, recorder, batch=7) for _ in range(3)]
    start = threading.Barrier(len(relays))
    errors: list[BaseException] = []

    def drain(relay: Relay) -> None:
        try:
            start.wait()
            while relay.run_once():
                pass
        except BaseException as error:  # surfaced below: a thread's failure must fail the test
            errors.append(error)

    threads = [threading.Thread(target=drain, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    counts = Counter(job_id for job_id, _ in recorder.sent)
    assert set(counts) == created
    assert set(counts.values()) == {1}


def test_a_failed_publish_is_retried_by_the_next_pass(db_jobs: Jobs) -> None:
    first, second = db_jobs.create(), db_jobs.create()
    recorder = Recorder(fail_first=1)
    relay = _relay(db_jobs, recorder)
    assert relay.run_once() == 0  # the broker refused the first: both go back, neither is lost
    assert db_jobs.get(first).published_at is None
    assert db_jobs.get(second).published_at is None
    assert relay.run_once() == 2
    assert sorted(job_id for job_id, _ in recorder.sent) == sorted([first, second])


def test_a_started_relay_catches_up_with_jobs_submitted_while_none_ran(
    db_jobs: Jobs, running: list[Relay]
) -> None:
    waiting = [db_jobs.create() for _ in range(3)]
    recorder = Recorder()
    relay = _relay(db_jobs, recorder, poll_seconds=60.0, conninfo=listen_conninfo(db_jobs.url))
    relay.start()
    running.append(relay)
    for job_id in waiting:
        # The first pass runs at start, long before the 60 s poll.
        assert recorder.wait_for(job_id, 30), f"job {job_id} was not published at start"


def test_a_notification_wakes_the_relay_before_its_poll(pg_jobs: Jobs, running: list[Relay]) -> None:
    poll_seconds = 60.0
    recorder = Recorder()
    relay = _relay(pg_jobs, recorder, poll_seconds=poll_seconds, conninfo=listen_conninfo(pg_jobs.url))
    first = pg_jobs.create()
    relay.start()
    running.append(relay)
    # The first pass runs after LISTEN: once it published, the relay is listening.
    assert recorder.wait_for(first, 30)
    job_id = pg_jobs.create()
    # Only the NOTIFY can wake it this early: the next poll is poll_seconds after the first pass.
    assert recorder.wait_for(job_id, poll_seconds / 2), "the relay did not wake on the new job"


# The relay's connection in this test's database: its last statement was its LISTEN.
_LISTENER = "datname = current_database() AND query LIKE 'LISTEN%'"


def test_a_lost_listening_connection_is_opened_again(pg_jobs: Jobs, running: list[Relay]) -> None:
    recorder = Recorder()
    relay = _relay(pg_jobs, recorder, poll_seconds=0.5, conninfo=listen_conninfo(pg_jobs.url))
    first = pg_jobs.create()
    relay.start()
    running.append(relay)
    assert recorder.wait_for(first, 30)
    with pg_jobs.engine.begin() as conn:  # what a PostgreSQL restart or an idle timeout does to it
        killed = conn.execute(
            text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {_LISTENER}")
        )
        assert list(killed.scalars()) == [True]
    job_id = pg_jobs.create()
    assert recorder.wait_for(job_id, 30)
    wait_for(lambda: _listening(pg_jobs), 30, "the relay to LISTEN again")


def _listening(jobs: Jobs) -> bool:
    with jobs.engine.connect() as conn:
        return bool(conn.execute(text(f"SELECT count(*) FROM pg_stat_activity WHERE {_LISTENER}")).scalar())


def test_without_postgresql_the_relay_polls(sqlite_url: str, tmp_path: Path, running: list[Relay]) -> None:
    jobs = Jobs(sqlite_url, tmp_path / "storage")
    assert listen_conninfo(sqlite_url) is None
    recorder = Recorder()
    relay = _relay(jobs, recorder, poll_seconds=0.2)
    relay.start()
    running.append(relay)
    job_id = jobs.create()
    assert recorder.wait_for(job_id, 30)
    jobs.engine.dispose()


def test_the_relay_puts_the_message_in_the_jobs_redis_queue(
    celery_settings: Settings, pg_jobs: Jobs, redis_server: RedisServer
) -> None:
    import redis

    from workers.celery_app import create_celery_app, publish

    app = create_celery_app(celery_settings)
    job_id = pg_jobs.create(queue="gpu")
    try:
        assert _relay(pg_jobs, lambda j, q: publish(app, j, q)).run_once() == 1
    finally:
        app.pool.force_close_all()
    client = redis.Redis.from_url(redis_server.url)
    assert (client.llen("gpu"), client.llen("cpu")) == (1, 0)
    assert job_id.encode() in client.lindex("gpu", 0)  # type: ignore[operator]


def test_the_api_submit_sends_no_message_in_distributed_mode(
    celery_settings: Settings, redis_server: RedisServer, make_api_key: Callable[..., str]
) -> None:
    import redis

    from app.main import create_app

    with TestClient(create_app(celery_settings)) as client:
        client.headers.update(bearer(make_api_key(celery_settings)))
        model_id = uploaded_mnist(client)
        response = client.post("/v1/jobs", json=job_body(model_id))
        assert response.status_code == 202, response.text
    client_redis = redis.Redis.from_url(redis_server.url)
    assert (client_redis.llen("cpu"), client_redis.llen("gpu")) == (0, 0)
    jobs = Jobs(celery_settings.database_url, celery_settings.storage_dir)
    try:
        job = jobs.get(response.json()["id"])
        assert (job.status, job.published_at) == ("queued", None)  # left for the workers' relays
    finally:
        jobs.engine.dispose()
