"""The job process: ``python -m workers.child <job_id> --worker-id W --parent-pid P`` (settings on stdin).

It is the only place where a model file is loaded (pickles included, when the deployment allows
them) and where torch runs. It writes progress to the database, runs the job function, and records
the job's end itself; its supervisor (``workers.runner``) records only what the child cannot: a
crash, a timeout, a cancellation by kill.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Job
from core.db.session import make_engine, make_session_factory
from core.logs import configure_logging, log_context
from core.settings import Settings
from core.storage import Storage, open_storage
from workers import memory, state

log = logging.getLogger("workers.child")

DEFAULT_TARGET = "workers.execute:run_pipeline_job"

# Progress rows are written at most this often (a stage change is always written at once); a
# fine-tuning loop may report every step, hundreds of times a second.
PROGRESS_WRITE_SECONDS = 0.5
# A ``progress`` event (the events list, which a client may stream) at most this often.
PROGRESS_EVENT_SECONDS = 5.0
# The child asks the database whether the job was cancelled at most this often.
STOP_POLL_SECONDS = 1.0
# How often the child checks that its supervisor is still alive.
ORPHAN_CHECK_SECONDS = 1.0


@dataclass
class JobOutput:
    """What a job function returns: stored on the job when it succeeds."""

    metrics: dict[str, Any] | None
    result: dict[str, Any] | None
    artifacts: list[state.ArtifactRecord] = field(default_factory=list)


@dataclass
class JobContext:
    """Everything a job function needs: the job row, its folder, and callbacks into the database."""

    job_id: str
    worker_id: str
    settings: Settings
    session_factory: sessionmaker[Session]
    job: Job
    lease_lost: bool = False
    _last_write: float = 0.0
    _last_event: float = 0.0
    _last_stage: str | None = None
    _last_poll: float = 0.0
    _stop: bool = False

    @functools.cached_property
    def storage(self) -> Storage:
        """The deployment's storage (a local folder, or an object store with a local cache)."""
        return open_storage(self.settings)

    @property
    def out_dir(self) -> Path:
        """Where the job writes its artifacts: ``<storage>/jobs/<job_id>/``, or with an object store
        a local work folder that :meth:`publish` uploads from."""
        path = self.storage.job_dir(self.job_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, artifacts: list[state.ArtifactRecord]) -> None:
        """Stores the artifacts' files under their keys (a no-op on the local folder they are in)."""
        root = self.out_dir
        prefix = f"jobs/{self.job_id}/"
        for record in artifacts:
            self.storage.publish(root / record.storage_key.removeprefix(prefix), record.storage_key)

    @property
    def resume_from(self) -> str | None:
        """The last stage a previous attempt finished, when this is a retry."""
        return self.job.last_finished_stage if self.job.attempt > 1 else None

    def progress(self, stage: str, percent: float, message: str | None = None) -> None:
        """Reports the current stage and percentage (0–100); throttled, never raises on a lost lease."""
        now = time.monotonic()
        stage_changed = stage != self._last_stage
        if not stage_changed and now - self._last_write < PROGRESS_WRITE_SECONDS:
            return
        event = not stage_changed and now - self._last_event >= PROGRESS_EVENT_SECONDS
        try:
            with self.session_factory() as session:
                ours = state.set_progress(
                    session,
                    self.job_id,
                    self.worker_id,
                    stage=stage,
                    percent=percent,
                    message=message,
                    event=event,
                )
        except SQLAlchemyError:
            # A database blip must not fail an hour of work; the next report (or the end) writes again.
            log.warning("job %s: could not write progress", self.job_id, exc_info=True)
            return
        self._last_write = now
        self._last_stage = stage
        if event or stage_changed:
            self._last_event = now
        if not ours:
            self.lease_lost = True

    def should_stop(self) -> bool:
        """True once cancellation was requested or the job was taken from this worker."""
        if self._stop or self.lease_lost:
            return True
        now = time.monotonic()
        if now - self._last_poll < STOP_POLL_SECONDS:
            return False
        self._last_poll = now
        try:
            with self.session_factory() as session:
                row = session.execute(
                    select(Job.status, Job.lease_owner, Job.cancel_requested).where(Job.id == self.job_id)
                ).one_or_none()
        except SQLAlchemyError:
            log.warning("job %s: could not poll for cancellation", self.job_id, exc_info=True)
            return False
        if row is None or row.lease_owner != self.worker_id or row.status not in state.ACTIVE_STATUSES:
            self.lease_lost = True
        self._stop = bool(row is not None and row.cancel_requested) or self.lease_lost
        return self._stop

    def artifact(
        self, path: Path, *, media_type: str, name: str | None = None, sha256: str | None = None
    ) -> state.ArtifactRecord:
        """Describes a file written under ``out_dir`` for the artifacts list (hashing it if needed)."""
        path = Path(path).resolve()
        root = self.out_dir.resolve()
        if root not in path.parents:
            raise ValueError(f"artifact {path} is outside the job folder {root}")
        rel = path.relative_to(root).as_posix()
        if sha256 is None:
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            sha256 = digest.hexdigest()
        return state.ArtifactRecord(
            name=name or rel,
            sha256=sha256,
            size_bytes=path.stat().st_size,
            media_type=media_type,
            storage_key=f"jobs/{self.job_id}/{rel}",
        )


JobFunction = Callable[[JobContext], JobOutput]


def resolve_target(target: str) -> JobFunction:
    """Imports ``module:function``."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"job target {target!r} is not of the form module:function")
    return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


def _watch_parent(parent_pid: int) -> None:
    """Kills this job's process group once the supervisor is gone.

    The child lives in its own session, so SIGKILL of the worker (or of the worker's process group)
    does not reach it. Left alone it would keep running while the reconciler hands the job to another
    worker: the same job twice at once. Polling the parent pid works on every POSIX system, unlike
    ``PR_SET_PDEATHSIG``, which also fires when the *thread* that started us exits.
    """

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os.killpg(os.getpgrp(), signal.SIGKILL)
            time.sleep(ORPHAN_CHECK_SECONDS)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _load_job(session_factory: sessionmaker[Session], job_id: str, worker_id: str) -> Job | None:
    with session_factory() as session:
        job = session.get(Job, job_id)
        if job is None or job.lease_owner != worker_id or job.status not in state.ACTIVE_STATUSES:
            return None
        session.expunge(job)
        return job


def run(job_id: str, worker_id: str, settings: Settings, target: str) -> int:
    """Runs the job function and records its end; returns the process exit code."""
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    job = _load_job(session_factory, job_id, worker_id)
    if job is None:
        log.warning("job %s is not held by %s any more; nothing to do", job_id, worker_id)
        return 0
    ctx = JobContext(
        job_id=job_id, worker_id=worker_id, settings=settings, session_factory=session_factory, job=job
    )
    try:
        return _run_job(ctx, target)
    finally:
        if not ctx.lease_lost:  # else the job is another worker's now
            ctx.storage.release_job_dir(job_id)
        engine.dispose()


def _run_job(ctx: JobContext, target: str) -> int:
    """The body of :func:`run`: the job function, its artifacts published, its end recorded."""
    job_id, worker_id, session_factory = ctx.job_id, ctx.worker_id, ctx.session_factory
    limit_bytes = ctx.settings.job_memory_mb * memory.MiB
    # Before the model or torch loads: the supervisor's watchdog sees only what outlasts a poll.
    memory.prefer_for_oom_kill()
    memory.apply_process_limit(limit_bytes, device=ctx.job.device)
    try:
        output = resolve_target(target)(ctx)
        if not ctx.lease_lost:
            ctx.publish(output.artifacts)
    except Exception as exc:
        # Anything that escapes the interpreter (a signal, os._exit, SystemExit) is the supervisor's to
        # record as ``worker_crashed``; every exception is recorded here, with its stable code if any.
        if ctx.lease_lost:
            return 0
        code = getattr(exc, "code", None)
        refusal = memory.refused_allocation(exc) if limit_bytes else None
        with session_factory() as session:
            if refusal is not None:  # checked first: engine errors may wrap it ("input does not fit")
                message = memory.refused_message(limit_bytes, refusal)
                state.finish_failed(
                    session, job_id, worker_id, error_type=memory.MEMORY_LIMIT, message=message
                )
            elif code == "cancelled":
                state.finish_cancelled(session, job_id, worker_id, message=getattr(exc, "message", None))
            elif isinstance(code, str) and hasattr(exc, "message"):
                state.finish_failed(session, job_id, worker_id, error_type=code, message=str(exc.message))
            else:
                traceback.print_exc()
                message = f"{type(exc).__name__}: {exc}"
                state.finish_failed(
                    session, job_id, worker_id, error_type=state.INTERNAL_ERROR, message=message
                )
        return 0
    if ctx.lease_lost:
        return 0
    with session_factory() as session:
        state.finish_succeeded(
            session,
            job_id,
            worker_id,
            metrics=output.metrics,
            result=output.result,
            artifacts=output.artifacts,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.child", description=__doc__)
    parser.add_argument("job_id")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--target", default=DEFAULT_TARGET, help="the job function, module:function")
    args = parser.parse_args(argv)
    _watch_parent(args.parent_pid)
    settings = Settings.model_validate_json(sys.stdin.read())
    configure_logging(settings.log_format, settings.log_level)
    with log_context(job_id=args.job_id):  # every line of the job process names its job
        return run(args.job_id, args.worker_id, settings, args.target)


if __name__ == "__main__":
    sys.exit(main())
