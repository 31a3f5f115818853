"""The job state machine: every transition is conditional, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import update

from core.db.models import Job
from core.db.types import utcnow
from tests.workers.conftest import Jobs
from workers import state


def _types(jobs: Jobs, job_id: str) -> list[str]:
    return [e.type for e in jobs.events(job_id)]


def test_claim_is_exclusive_under_concurrent_claimers(db_jobs: Jobs) -> None:
    # Given 10 queued jobs, when two claimers race for each of them at the same instant,
    # then exactly one wins each job.
    for _ in range(10):
        job_id = db_jobs.create()
        barrier = threading.Barrier(2)
        winners: list[str] = []

        def claimer(
            name: str,
            job_id: str = job_id,
            barrier: threading.Barrier = barrier,
            winners: list[str] = winners,
        ) -> None:
            with db_jobs.session_factory() as session:
                barrier.wait()
                if state.claim(session, job_id, name, 30) is not None:
                    winners.append(name)

        threads = [threading.Thread(target=claimer, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        job = db_jobs.get(job_id)
        assert (job.status, job.lease_owner, job.attempt) == ("running", winners[0], 1)
        assert _types(db_jobs, job_id).count("claimed") == 1


def test_duplicate_delivery_claims_nothing(db_jobs: Jobs) -> None:
    job_id = db_jobs.create()
    with db_jobs.session_factory() as session:
        assert state.claim(session, job_id, "w1", 30) is not None
        assert state.claim(session, job_id, "w2", 30) is None
    assert db_jobs.get(job_id).lease_owner == "w1"


def test_heartbeat_and_finish_only_by_the_lease_owner(db_jobs: Jobs) -> None:
    job_id = db_jobs.create()
    with db_jobs.session_factory() as session:
        state.claim(session, job_id, "w1", 5)
        before = db_jobs.get(job_id).lease_expires_at
        assert not state.heartbeat(session, job_id, "intruder", 60)
        assert state.heartbeat(session, job_id, "w1", 60)
        assert db_jobs.get(job_id).lease_expires_at > before
        assert not state.finish_failed(session, job_id, "intruder", error_type="x", message="y")
        assert state.finish_succeeded(session, job_id, "w1", metrics={"a": 1}, result={}, artifacts=[])
        assert not state.heartbeat(session, job_id, "w1", 60)
    job = db_jobs.get(job_id)
    assert (job.status, job.lease_owner, job.progress, job.metrics) == ("succeeded", None, 100.0, {"a": 1})


def test_progress_writes_stage_events_and_last_finished_stage(db_jobs: Jobs) -> None:
    job_id = db_jobs.create()
    with db_jobs.session_factory() as session:
        state.claim(session, job_id, "w1", 30)
        assert state.set_progress(session, job_id, "w1", stage="loading", percent=5)
        assert state.set_progress(session, job_id, "w1", stage="loading", percent=10)
        assert state.set_progress(session, job_id, "w1", stage="pruning", percent=40, event=True)
        assert state.set_progress(session, job_id, "w1", stage="pruning", percent=50, event=True)
        assert not state.set_progress(session, job_id, "other", stage="speedup", percent=60)
    job = db_jobs.get(job_id)
    assert (job.stage, job.progress, job.last_finished_stage) == ("pruning", 50.0, "loading")
    assert _types(db_jobs, job_id) == ["claimed", "stage", "stage", "progress"]


def _expire(jobs: Jobs, job_id: str) -> None:
    with jobs.session_factory() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()


def test_reconcile_retries_then_fails_worker_lost(db_jobs: Jobs) -> None:
    job_id = db_jobs.create(max_attempts=2)
    with db_jobs.session_factory() as session:
        state.claim(session, job_id, "w1", 30)
        state.set_progress(session, job_id, "w1", stage="loading", percent=5)
        state.set_progress(session, job_id, "w1", stage="pruning", percent=20)
        assert state.reconcile(session).requeue == []  # lease still valid: nothing to do
    _expire(db_jobs, job_id)
    with db_jobs.session_factory() as session:
        result = state.reconcile(session)
    assert result.requeue == [job_id] and result.retried == [job_id]
    job = db_jobs.get(job_id)
    assert (job.status, job.lease_owner, job.attempt, job.last_finished_stage) == (
        "queued",
        None,
        1,
        "loading",
    )

    with db_jobs.session_factory() as session:
        assert state.claim(session, job_id, "w2", 30) is not None
    _expire(db_jobs, job_id)
    with db_jobs.session_factory() as session:
        result = state.reconcile(session)
    assert result.lost == [job_id] and result.requeue == []
    job = db_jobs.get(job_id)
    assert (job.status, job.error_type, job.attempt) == ("failed", "worker_lost", 2)
    assert _types(db_jobs, job_id)[-1] == "failed"
    assert "retried" in _types(db_jobs, job_id)


def test_reconcile_finishes_an_orphaned_cancellation(db_jobs: Jobs) -> None:
    job_id = db_jobs.create()
    with db_jobs.session_factory() as session:
        state.claim(session, job_id, "w1", 30)
    db_jobs.cancel(job_id)
    _expire(db_jobs, job_id)
    with db_jobs.session_factory() as session:
        assert state.reconcile(session).cancelled == [job_id]
    assert db_jobs.get(job_id).status == "cancelled"


def test_mark_published_once_per_staleness(db_jobs: Jobs) -> None:
    job_id = db_jobs.create()
    with db_jobs.session_factory() as session:
        assert state.stale_queued(session, utcnow(), unclaimed_after=60) == []
        (job,) = state.stale_queued(session, utcnow() + timedelta(seconds=61), unclaimed_after=60)
        assert state.mark_published(session, job_id, job.updated_at, reason="test")
        # A second reconciler that saw the same row loses the race.
        assert not state.mark_published(session, job_id, job.updated_at, reason="test")
    assert _types(db_jobs, job_id) == ["requeued"]


def test_release_hands_the_job_back_without_counting_the_attempt(db_jobs: Jobs) -> None:
    job_id = db_jobs.create()
    with db_jobs.session_factory() as session:
        state.claim(session, job_id, "w1", 30)
        assert state.release(session, job_id, "w1", reason="shutdown")
    job = db_jobs.get(job_id)
    assert (job.status, job.attempt, job.lease_owner) == ("queued", 0, None)


def test_a_failed_or_cancelled_job_keeps_the_stage_timings_of_its_last_attempt(db_jobs: Jobs) -> None:
    failed, cancelled = db_jobs.create(), db_jobs.create()
    with db_jobs.session_factory() as session:
        for job_id in (failed, cancelled):
            state.claim(session, job_id, "w1", 30)
            assert state.set_progress(session, job_id, "w1", stage="loading", percent=5)
            assert state.set_progress(session, job_id, "w1", stage="pruning", percent=40)
        assert state.finish_failed(session, failed, "w1", error_type="crashed", message="boom")
        assert state.finish_cancelled(session, cancelled, "w1")
    for job_id in (failed, cancelled):
        timings = db_jobs.get(job_id).result["timings"]
        assert set(timings) == {"loading", "pruning"}
        assert all(seconds >= 0 for seconds in timings.values())


def test_a_retried_attempt_times_only_its_own_stages(db_jobs: Jobs) -> None:
    job_id = db_jobs.create()
    with db_jobs.session_factory() as session:
        state.claim(session, job_id, "w1", 30)
        assert state.set_progress(session, job_id, "w1", stage="pruning", percent=40)
    _expire(db_jobs, job_id)
    with db_jobs.session_factory() as session:
        state.reconcile(session)
        state.claim(session, job_id, "w2", 30)
        assert state.set_progress(session, job_id, "w2", stage="loading", percent=5)
        assert state.finish_failed(session, job_id, "w2", error_type="crashed", message="boom")
    # The first attempt's pruning stage is not the second attempt's: only loading was timed.
    assert set(db_jobs.get(job_id).result["timings"]) == {"loading"}
