"""Runs one claimed job in a child process and supervises it: lease, cancellation, time limit, crashes.

Why ``subprocess`` (``python -m workers.child``) and not ``multiprocessing``:

- A Celery prefork pool process is a daemon, and ``multiprocessing`` refuses to start children from a
  daemon ("daemonic processes are not allowed to have children"); ``subprocess`` has no such rule.
- The child is a fresh interpreter (exec, never fork), so it inherits no CUDA context, no database
  connections and no broker sockets from the worker, and it is *not* a daemon: ``DataLoader``
  with ``num_workers > 0`` works inside it.
- ``start_new_session=True`` makes it the leader of its own process group, so cancelling or timing
  out sends one signal to that group and kills exactly this job (and its DataLoader workers),
  never the worker or another job.

The supervising side (this module) imports neither torch nor the engine; it only talks to the
database and waits on the child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.db.models import Job, Tenant
from core.logs import log_context
from core.settings import Settings
from workers import memory, state

log = logging.getLogger(__name__)

SessionFactory = Callable[[], Session]

# How often the parent looks at the job row for a cancel request; 0.5 s keeps cancellation prompt
# while costing one indexed primary-key SELECT per running job per half second.
POLL_SECONDS = 0.5
# Time between SIGTERM and SIGKILL of the job's process group.
KILL_GRACE_SECONDS = 3.0


class Outcome(str, Enum):
    """How the supervision of one job ended."""

    FINISHED = "finished"  # the child recorded the job's end itself (succeeded/failed/cancelled)
    CANCELLED = "cancelled"  # cancel requested: group killed, job marked cancelled
    TIMEOUT = "timeout"  # time limit reached: group killed, job failed ``timeout``
    MEMORY_LIMIT = "memory_limit"  # over the memory limit: group killed, job failed ``memory_limit``
    CRASHED = "crashed"  # the child died without recording an end: job failed ``worker_crashed``
    LEASE_LOST = "lease_lost"  # the reconciler took the job away: group killed, nothing recorded
    RELEASED = "released"  # the worker is stopping: group killed, job handed back to the queue


@dataclass(frozen=True)
class RunnerOptions:
    """Timing of the supervision; built from settings, overridable for tests."""

    lease_seconds: float
    heartbeat_seconds: float
    time_limit_seconds: float
    memory_limit_bytes: int = 0  # 0: no limit
    poll_seconds: float = POLL_SECONDS
    kill_grace_seconds: float = KILL_GRACE_SECONDS
    target: str | None = None  # ``module:function`` run by the child instead of the pipeline

    @classmethod
    def from_settings(cls, settings: Settings, *, target: str | None = None) -> RunnerOptions:
        return cls(
            lease_seconds=settings.lease_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            time_limit_seconds=settings.job_time_limit_seconds,
            memory_limit_bytes=settings.job_memory_mb * memory.MiB,
            target=target or os.environ.get(TARGET_ENV) or None,
        )


# The job function the child runs, as ``module:function``; the worker's deployment may point it at
# its own wrapper of the pipeline. Read by the worker, never taken from a request.
TARGET_ENV = "NNCOMPRESS_WORKER_JOB_TARGET"


def _spawn(
    job_id: str, worker_id: str, settings: Settings, options: RunnerOptions
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "workers.child",
        job_id,
        "--worker-id",
        worker_id,
        "--parent-pid",
        str(os.getpid()),
    ]
    if options.target:
        argv += ["--target", options.target]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, start_new_session=True, close_fds=True)
    # Settings travel on stdin, not argv/env: argv is world-readable in ``ps``, and the database URL may
    # hold a password. (A SecretStr field would be masked by model_dump_json; test_runner checks that
    # the settings survive the trip.)
    assert proc.stdin is not None
    try:
        proc.stdin.write(settings.model_dump_json().encode())
        proc.stdin.close()
    except BrokenPipeError:  # the child died at once; its exit code tells the rest
        pass
    return proc


def kill_group(proc: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM the child's process group, then SIGKILL it after ``grace_seconds``; reaps the child."""
    pgid = proc.pid  # start_new_session: the child leads a group whose id is its pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_seconds)
    # Also after a clean exit on SIGTERM: DataLoader workers of the child may still be alive in the group.
    # The group id stays ours while any member lives; once it is empty, killpg finds nothing.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def describe_exit(returncode: int) -> str:
    """A human reading of a child's exit status (negative = killed by that signal)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory, or killed from outside)" if -returncode == signal.SIGKILL else ""
        return f"the job process was killed by {name}{hint}"
    return f"the job process exited with code {returncode} without recording a result"


def run_claimed_job(
    job_id: str,
    worker_id: str,
    *,
    settings: Settings,
    session_factory: SessionFactory,
    options: RunnerOptions | None = None,
    stop: threading.Event | None = None,
    on_spawn: Callable[[int], None] | None = None,
) -> Outcome:
    """Runs a job this worker has claimed until it ends; always leaves the job in a consistent state.

    Args:
        job_id: the job, already ``running`` with ``lease_owner == worker_id``.
        worker_id: the lease owner.
        settings: passed on to the child (database, storage, ``allow_pickle``).
        session_factory: sessions for the supervisor's heartbeats and polls.
        options: timing; defaults from ``settings``.
        stop: set when the worker shuts down; the job is killed and handed back to the queue.
        on_spawn: called with the child's pid (its process group id) once it started.
    """
    options = options or RunnerOptions.from_settings(settings)
    proc = _spawn(job_id, worker_id, settings, options)
    log.info("job %s: started job process pid=%d (worker %s)", job_id, proc.pid, worker_id)
    if on_spawn is not None:
        on_spawn(proc.pid)
    started = time.monotonic()
    next_heartbeat = started + options.heartbeat_seconds
    peak_memory = 0
    while True:
        try:
            returncode = proc.wait(timeout=options.poll_seconds)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if stop is not None and stop.is_set():
            kill_group(proc, options.kill_grace_seconds)
            with session_factory() as session:
                state.release(session, job_id, worker_id, reason="worker shutting down")
            return Outcome.RELEASED
        if now - started > options.time_limit_seconds:
            kill_group(proc, options.kill_grace_seconds)
            message = f"the job ran longer than its time limit of {options.time_limit_seconds:g} s"
            with session_factory() as session:
                state.finish_failed(session, job_id, worker_id, error_type=state.TIMEOUT, message=message)
            log.warning("job %s: killed after time limit %.0f s", job_id, options.time_limit_seconds)
            return Outcome.TIMEOUT
        if options.memory_limit_bytes:
            peak_memory = max(peak_memory, memory.group_memory_bytes(proc.pid))
            if peak_memory > options.memory_limit_bytes:
                kill_group(proc, 0)  # no grace: every moment over the limit is a risk to the host
                message = memory.over_limit_message(options.memory_limit_bytes, peak_memory)
                with session_factory() as session:
                    recorded = state.finish_failed(
                        session, job_id, worker_id, error_type=memory.MEMORY_LIMIT, message=message
                    )
                if recorded:  # else the child recorded the job's end just before the kill
                    log.warning("job %s: %s", job_id, message)
                    return Outcome.MEMORY_LIMIT
                return Outcome.FINISHED
        try:
            with session_factory() as session:
                if now >= next_heartbeat:
                    state.heartbeat(session, job_id, worker_id, options.lease_seconds)
                    next_heartbeat = now + options.heartbeat_seconds
                row = session.execute(
                    select(Job.status, Job.lease_owner, Job.cancel_requested).where(Job.id == job_id)
                ).one_or_none()
        except SQLAlchemyError:
            # The database is briefly unreachable: keep the job running; if this lasts past the lease,
            # the reconciler recovers the job and our next poll sees the lease gone.
            log.exception("job %s: database poll failed", job_id)
            continue
        if row is None or row.lease_owner != worker_id or row.status not in state.ACTIVE_STATUSES:
            if (
                row is not None
                and row.status in ("succeeded", "failed", "cancelled")
                and row.lease_owner is None
            ):
                # The child recorded the end and is exiting right now.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=options.kill_grace_seconds)
                if proc.poll() is not None:
                    return Outcome.FINISHED
            kill_group(proc, options.kill_grace_seconds)
            log.warning("job %s: lease lost (status=%s); job process killed", job_id, row and row.status)
            return Outcome.LEASE_LOST
        if row.cancel_requested:
            kill_group(proc, options.kill_grace_seconds)
            with session_factory() as session:
                state.finish_cancelled(session, job_id, worker_id)
            log.info("job %s: cancelled; job process group %d killed", job_id, proc.pid)
            return Outcome.CANCELLED
    # The child exited on its own. Kill whatever it left in its group (a stray DataLoader worker).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with session_factory() as session:
        if returncode == 0:
            end = session.execute(select(Job.status, Job.lease_owner).where(Job.id == job_id)).one_or_none()
            if end is None or end.lease_owner != worker_id:
                # Either the child recorded the end, or it saw the lease go elsewhere and stepped aside.
                lost = end is not None and end.status in state.ACTIVE_STATUSES
                return Outcome.LEASE_LOST if lost else Outcome.FINISHED
        crashed = state.finish_failed(
            session, job_id, worker_id, error_type=state.WORKER_CRASHED, message=describe_exit(returncode)
        )
    if crashed:
        log.error("job %s: %s", job_id, describe_exit(returncode))
        return Outcome.CRASHED
    return Outcome.FINISHED


def claim_and_run(
    job_id: str,
    worker_id: str,
    *,
    settings: Settings,
    session_factory: SessionFactory,
    options: RunnerOptions | None = None,
    stop: threading.Event | None = None,
    on_spawn: Callable[[int], None] | None = None,
) -> Outcome | None:
    """What a worker does with a delivered job id, in both modes: claim, then run under supervision.

    Returns None when the job was not claimable (a duplicate delivery, or no longer queued). A
    failure of the supervision itself (the job process cannot even be started) fails the job with
    ``internal_error`` rather than leaving it to expire and retry into the same failure.
    """
    options = options or RunnerOptions.from_settings(settings)
    with session_factory() as session:
        job = state.claim(session, job_id, worker_id, options.lease_seconds)
        if job is None:
            log.info("job %s: not claimable (duplicate delivery or no longer queued); ignored", job_id)
            return None
        tenant = session.scalar(select(Tenant.name).where(Tenant.id == job.tenant_id))
    with log_context(job_id=job_id, tenant=tenant):
        return _run_logged(job_id, worker_id, settings, session_factory, options, stop, on_spawn)


def _run_logged(
    job_id: str,
    worker_id: str,
    settings: Settings,
    session_factory: SessionFactory,
    options: RunnerOptions,
    stop: threading.Event | None,
    on_spawn: Callable[[int], None] | None,
) -> Outcome:
    try:
        outcome = run_claimed_job(
            job_id,
            worker_id,
            settings=settings,
            session_factory=session_factory,
            options=options,
            stop=stop,
            on_spawn=on_spawn,
        )
    except Exception as exc:
        log.exception("job %s: supervising the job process failed", job_id)
        with session_factory() as session:
            message = f"the worker could not run the job: {type(exc).__name__}: {exc}"
            state.finish_failed(session, job_id, worker_id, error_type=state.INTERNAL_ERROR, message=message)
        raise
    log.info("job %s: %s", job_id, outcome.value)
    return outcome
