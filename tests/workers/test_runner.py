"""The job child process under supervision: success, engine errors, crashes, cancellation, time limit."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from core.settings import Settings
from tests.workers.conftest import FAST, TARGET, Jobs, marker_lines, pid_alive, wait_for
from workers import runner, state


def _settings(jobs: Jobs, **overrides: object) -> Settings:
    return Settings(database_url=jobs.url, storage_dir=jobs.storage, **{**FAST, **overrides})


def _run(jobs: Jobs, job_id: str, settings: Settings, **kwargs: object) -> runner.Outcome:
    with jobs.session_factory() as session:
        assert state.claim(session, job_id, "w1", settings.lease_seconds) is not None
    options = runner.RunnerOptions.from_settings(settings, target=TARGET)
    return runner.run_claimed_job(
        job_id, "w1", settings=settings, session_factory=jobs.session_factory, options=options, **kwargs
    )


def test_job_succeeds_with_progress_and_artifacts(db_jobs: Jobs) -> None:
    settings = _settings(db_jobs)
    job_id = db_jobs.create(workload="sleep", seconds=1.0)
    assert _run(db_jobs, job_id, settings) is runner.Outcome.FINISHED
    job = db_jobs.get(job_id)
    assert (job.status, job.progress, job.lease_owner) == ("succeeded", 100.0, None)
    assert job.metrics == {"before": {"params": 10}, "after": {"params": 5}}
    with db_jobs.session_factory() as session:
        session.add(job)
        (artifact,) = job.artifacts
    path = db_jobs.storage / artifact.storage_key
    assert artifact.storage_key == f"jobs/{job_id}/report.json"
    assert path.read_bytes() == b'{"ok": true}' and artifact.size_bytes == len(b'{"ok": true}')
    types = [e.type for e in db_jobs.events(job_id)]
    assert types[0] == "claimed" and types[-1] == "succeeded" and types.count("stage") >= 2


def test_engine_error_fails_with_its_code(db_jobs: Jobs) -> None:
    job_id = db_jobs.create(workload="bad_input")
    assert _run(db_jobs, job_id, _settings(db_jobs)) is runner.Outcome.FINISHED
    job = db_jobs.get(job_id)
    assert (job.status, job.error_type) == ("failed", "invalid_config")
    assert "entry 0" in (job.error_message or "")


def test_unexpected_exception_fails_internal_error(db_jobs: Jobs) -> None:
    job_id = db_jobs.create(workload="boom")
    _run(db_jobs, job_id, _settings(db_jobs))
    job = db_jobs.get(job_id)
    assert (job.status, job.error_type, job.error_message) == (
        "failed",
        "internal_error",
        "RuntimeError: unexpected",
    )


@pytest.mark.parametrize(("workload", "expected"), [("crash", "SIGSEGV"), ("exit", "code 3")])
def test_crashing_child_fails_worker_crashed_and_supervisor_survives(
    db_jobs: Jobs, workload: str, expected: str
) -> None:
    job_id = db_jobs.create(workload=workload)
    assert _run(db_jobs, job_id, _settings(db_jobs)) is runner.Outcome.CRASHED
    job = db_jobs.get(job_id)
    assert (job.status, job.error_type) == ("failed", "worker_crashed")
    assert expected in (job.error_message or "")


def _run_in_background(
    db_jobs: Jobs, job_id: str, marker: Path
) -> tuple[threading.Thread, list[runner.Outcome], int]:
    """Supervises ``job_id`` on a thread until its job process has started.

    Returns:
        The thread, the list its outcome will be appended to, and the job process's pid.
    """
    result: list[runner.Outcome] = []
    thread = threading.Thread(target=lambda: result.append(_run(db_jobs, job_id, _settings(db_jobs))))
    thread.start()
    ((pid, _),) = wait_for(lambda: marker_lines(marker), 30, "the job process to start")
    return thread, result, pid


def test_cancel_kills_exactly_the_job_process(db_jobs: Jobs, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    job_id = db_jobs.create(workload="sleep", seconds=60, marker=str(marker))
    thread, result, pid = _run_in_background(db_jobs, job_id, marker)
    db_jobs.cancel(job_id)
    thread.join(30)
    assert result == [runner.Outcome.CANCELLED] or db_jobs.get(job_id).status == "cancelled"
    assert db_jobs.get(job_id).status == "cancelled"
    assert not pid_alive(pid)


def test_time_limit_kills_the_child(db_jobs: Jobs, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    job_id = db_jobs.create(workload="sleep", seconds=60, marker=str(marker))
    settings = _settings(db_jobs, job_time_limit_seconds=2)
    assert _run(db_jobs, job_id, settings) is runner.Outcome.TIMEOUT
    job = db_jobs.get(job_id)
    assert (job.status, job.error_type) == ("failed", "timeout")
    ((pid, _),) = marker_lines(marker)
    assert not pid_alive(pid)


def test_lost_lease_kills_the_child_and_records_nothing(db_jobs: Jobs, tmp_path: Path) -> None:
    # Given a running job, when the reconciler hands it elsewhere (simulated by stealing the lease),
    # then the supervisor kills its job process and leaves the row to the new owner.
    from sqlalchemy import update

    from core.db.models import Job

    marker = tmp_path / "runs"
    job_id = db_jobs.create(workload="sleep", seconds=60, marker=str(marker))
    thread, result, pid = _run_in_background(db_jobs, job_id, marker)
    with db_jobs.session_factory() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_owner="w2"))
        session.commit()
    thread.join(30)
    assert result == [runner.Outcome.LEASE_LOST]
    assert not pid_alive(pid)
    assert db_jobs.get(job_id).lease_owner == "w2"


def test_dataloader_workers_run_in_the_job_process_and_die_with_it(sqlite_url: str, tmp_path: Path) -> None:
    # Given a job whose DataLoader uses 2 worker processes (refused inside a daemonic Celery pool
    # process), when it is cancelled, then the job process and both loader workers are gone.
    jobs = Jobs(sqlite_url, tmp_path / "storage")
    marker, pids_file = tmp_path / "runs", tmp_path / "loader-pids"
    job_id = jobs.create(workload="dataloader", marker=str(marker), pids_file=str(pids_file))
    thread = threading.Thread(target=_run, args=(jobs, job_id, _settings(jobs)))
    thread.start()

    def loader_pids() -> list[int]:
        return [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else []

    workers = wait_for(lambda: len(loader_pids()) >= 2 and loader_pids(), 60, "two DataLoader workers")
    ((job_pid, _),) = marker_lines(marker)
    assert job_pid not in workers
    jobs.cancel(job_id)
    thread.join(30)
    assert jobs.get(job_id).status == "cancelled"
    wait_for(lambda: not any(pid_alive(p) for p in [job_pid, *workers]), 10, "the job's processes to exit")
    jobs.engine.dispose()


def test_settings_reach_the_child_unchanged(tmp_path: Path) -> None:
    # The child rebuilds Settings from model_dump_json(); a masked or lossy field would break it.
    settings = Settings(
        database_url="postgresql://u:secret@db/x",
        broker_url="redis://:pw@r:6379/1",
        storage_dir=tmp_path,
        allow_pickle=True,
        api_key_pepper="p" * 24,
        webhook_allow_private=True,
        **FAST,
    )
    assert Settings.model_validate_json(settings.model_dump_json()) == settings
