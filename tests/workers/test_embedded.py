"""The embedded dispatcher: threads in the API process, the same claim/lease/child process, on SQLite.

Its end-to-end run with the real pipeline is in ``test_service_e2e.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.dispatch import make_dispatcher
from core.settings import Settings
from tests.workers.conftest import FAST, TARGET, Jobs, marker_lines, pid_alive, wait_for
from workers import runner
from workers.dispatch import EmbeddedDispatcher


@pytest.fixture
def sqlite_jobs(sqlite_url: str, tmp_path: Path) -> Iterator[Jobs]:
    jobs = Jobs(sqlite_url, tmp_path / "storage")
    yield jobs
    jobs.engine.dispose()


def _embedded(jobs: Jobs, *, target: str | None = TARGET, **overrides: object) -> EmbeddedDispatcher:
    settings = Settings(database_url=jobs.url, storage_dir=jobs.storage, **{**FAST, **overrides})
    dispatcher = make_dispatcher(settings, jobs.session_factory)
    assert isinstance(dispatcher, EmbeddedDispatcher)
    dispatcher.options = runner.RunnerOptions.from_settings(settings, target=target)
    return dispatcher


def test_jobs_run_one_after_another_and_a_crash_does_not_stop_the_worker(sqlite_jobs: Jobs) -> None:
    dispatcher = _embedded(sqlite_jobs)
    dispatcher.start()
    try:
        crash = sqlite_jobs.create(workload="crash")
        ok = sqlite_jobs.create(workload="sleep", seconds=0.3)
        dispatcher.enqueue(crash)
        dispatcher.enqueue(ok)
        dispatcher.enqueue(ok)  # a duplicate: ignored
        assert sqlite_jobs.wait_status(crash, {"failed", "succeeded"}, 30).error_type == "worker_crashed"
        assert sqlite_jobs.wait_status(ok, {"failed", "succeeded"}, 30).status == "succeeded"
        dispatcher.check()
    finally:
        dispatcher.stop()
    assert [e.type for e in sqlite_jobs.events(ok)].count("claimed") == 1


def test_start_picks_up_jobs_queued_before_the_restart(sqlite_jobs: Jobs) -> None:
    job_id = sqlite_jobs.create(workload="sleep", seconds=0.2)  # inserted, never enqueued
    dispatcher = _embedded(sqlite_jobs)
    dispatcher.start()
    try:
        assert sqlite_jobs.wait_status(job_id, {"failed", "succeeded"}, 30).status == "succeeded"
    finally:
        dispatcher.stop()


def test_stop_hands_a_running_job_back_and_kills_its_process(sqlite_jobs: Jobs, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    job_id = sqlite_jobs.create(workload="sleep", seconds=60, marker=str(marker))
    dispatcher = _embedded(sqlite_jobs)
    dispatcher.start()
    dispatcher.enqueue(job_id)
    ((pid, _),) = wait_for(lambda: marker_lines(marker), 30, "the job process to start")
    dispatcher.stop()
    job = sqlite_jobs.get(job_id)
    assert (job.status, job.attempt, job.lease_owner) == ("queued", 0, None)
    assert not pid_alive(pid)
    # The next start runs it to the end.
    dispatcher = _embedded(sqlite_jobs)
    dispatcher.start()
    try:
        sqlite_jobs.cancel(sqlite_jobs.wait_status(job_id, {"running"}, 30).id)
        assert sqlite_jobs.wait_status(job_id, {"cancelled", "failed", "succeeded"}, 30).status == "cancelled"
    finally:
        dispatcher.stop()
    assert all(not pid_alive(p) for p, _ in marker_lines(marker))
