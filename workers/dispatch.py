"""How the API hands a queued job to the workers: Celery in the distributed mode, threads when embedded.

Embedded, ``enqueue`` hands the job id to the threads; distributed, the workers' relays publish the
ids of the rows the API committed (``workers.relay``) and ``enqueue`` does nothing. Either way only
the job id travels; the workers (Celery tasks or embedded threads) claim it with the same
conditional UPDATE, run it in the same child process under the same lease, and the same reconciler
recovers what was lost. The API process never imports torch for this.

The API finds these classes by name (``core.dispatch.make_dispatcher``, entry point group
``nncompress.dispatchers`` in ``pyproject.toml``): the web layer does not import this package.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import uuid
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.models import Job
from core.db.types import utcnow
from core.settings import Settings
from core.tracking.logger import MlflowLogger, start_logger
from core.webhooks.deliverer import WebhookDeliverer
from workers import runner, state
from workers.reconciler import Reconciler

log = logging.getLogger(__name__)

SessionFactory = Callable[[], Session]

__all__ = ["CeleryDispatcher", "EmbeddedDispatcher"]


class CeleryDispatcher:
    """The distributed mode's side in the API: it checks the broker but publishes nothing.

    The job row the API commits is the message: the relay thread of every worker publishes it to
    the job's ``cpu``/``gpu`` queue (``workers.relay``), which took the 0.61 ms of CPU a publish cost
    out of the API process.
    """

    def __init__(self, settings: Settings, session_factory: SessionFactory) -> None:
        from workers.celery_app import create_celery_app

        self.settings = settings
        self.session_factory = session_factory
        self.app = create_celery_app(settings)

    def enqueue(self, job_id: str, queue: str | None = None) -> None:
        """Nothing to do: the committed row is enough, a worker's relay publishes the job."""

    def start(self) -> None:
        """Nothing to start: the workers' relays publish jobs and their reconcilers recover them."""

    def stop(self) -> None:
        self.app.pool.force_close_all()

    def check(self) -> None:
        """Connects to the broker (one retry, 2 s timeout); raises ``OperationalError`` if it is down."""
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)
            conn.default_channel  # noqa: B018 - opening a channel is the round trip that proves the broker answers


class EmbeddedDispatcher:
    """A pool of threads in the API process, each running one job at a time in a child process.

    The threads only claim, heartbeat and wait: the job itself runs in ``python -m workers.child``,
    so torch (and CUDA) never load into the API process. A reconciler thread recovers expired leases
    and picks up jobs that were queued when the process last stopped; a deliverer thread sends the
    jobs' webhooks, and a logger thread logs finished jobs to MLflow where tracking is configured.
    """

    # Jobs run on this machine: a device it lacks (cuda) is refused at POST /v1/jobs.
    runs_in_process = True

    def __init__(
        self,
        settings: Settings,
        session_factory: SessionFactory,
        *,
        options: runner.RunnerOptions | None = None,
        reconcile_interval_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.options = options or runner.RunnerOptions.from_settings(settings)
        self.concurrency = settings.worker_concurrency
        self._ids: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running: dict[str, int] = {}  # job id -> job process pid, for observability and tests
        self.reconciler = Reconciler(
            session_factory=session_factory,
            publish=lambda job_id, _queue: self.enqueue(job_id),
            queue_depth=self._depth,
            interval_seconds=reconcile_interval_seconds or settings.reconcile_interval_seconds,
            unclaimed_after_seconds=settings.lease_seconds,
            name="nncompress-embedded-reconciler",
        )
        self.deliverer = WebhookDeliverer(session_factory, settings)
        self.mlflow_logger: MlflowLogger | None = None

    def enqueue(self, job_id: str, queue: str | None = None) -> None:
        # Every queue is served by this process's threads: the queue does not matter here.
        with self._lock:
            if job_id in self._pending:
                return
            self._pending.add(job_id)
        self._ids.put(job_id)

    def _depth(self, queue_name: str) -> int | None:
        # Every queued job of this process's database is ours to run, whatever its queue.
        with self._lock:
            pending = list(self._pending)
        if not pending:
            return 0
        with self.session_factory() as session:
            n = session.scalar(
                select(func.count()).select_from(Job).where(Job.id.in_(pending), Job.queue == queue_name)
            )
        return int(n or 0)

    def start(self) -> None:
        self._stop.clear()
        with self.session_factory() as session:
            # A fresh process holds no messages: every job still queued in the database is ours.
            leftover = [job.id for job in state.stale_queued(session, utcnow(), unclaimed_after=0)]
        for job_id in leftover:
            self.enqueue(job_id)
        for index in range(self.concurrency):
            thread = threading.Thread(
                target=self._work, args=(f"{self._owner}:{index}",), name=f"nncompress-job-{index}"
            )
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        self.reconciler.start()
        self.deliverer.start()
        self.mlflow_logger = start_logger(self.session_factory, self.settings)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.reconciler.stop()
        self.deliverer.stop()
        if self.mlflow_logger is not None:
            self.mlflow_logger.stop()
        for _ in self._threads:
            self._ids.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def check(self) -> None:
        dead = [t.name for t in self._threads if not t.is_alive()]
        if dead:
            raise RuntimeError(f"embedded worker threads died: {', '.join(dead)}")

    def _work(self, owner: str) -> None:
        while not self._stop.is_set():
            job_id = self._ids.get()
            if job_id is None:
                return
            with self._lock:
                self._pending.discard(job_id)
            try:
                self._run_one(job_id, owner)
            except Exception:  # one job's trouble (a database hiccup) must not end the worker thread
                log.exception("job %s: embedded worker failed", job_id)

    def _run_one(self, job_id: str, owner: str) -> None:
        runner.claim_and_run(
            job_id,
            owner,
            settings=self.settings,
            session_factory=self.session_factory,
            options=self.options,
            stop=self._stop,
            on_spawn=lambda pid: self.running.__setitem__(job_id, pid),
        )
        self.running.pop(job_id, None)
