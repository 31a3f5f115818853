"""The Celery app of the distributed mode: the broker only wakes workers, the database decides.

Run a worker (one per GPU, pinned with ``CUDA_VISIBLE_DEVICES``)::

    celery -A workers.celery_app worker -Q cpu            # or: python -m workers --queues cpu
    CUDA_VISIBLE_DEVICES=0 celery -A workers.celery_app worker -Q gpu -c 1

Settings come from ``NNCOMPRESS_*`` (``NNCOMPRESS_BROKER_URL``, ``NNCOMPRESS_DATABASE_URL``, ...).

Choices, each against a pitfall of Celery on Redis (design §6):

- The message carries the job id alone, and the task claims the job with one conditional UPDATE. A
  duplicate delivery (Redis redelivers an unacknowledged message after ``visibility_timeout``, even
  to a healthy worker still running it) claims nothing and returns at once: a job never runs twice.
- No result backend: the job row is the result.
- ``task_acks_late`` + ``worker_prefetch_multiplier=1`` + ``task_reject_on_worker_lost``: a worker holds
  at most the message it runs, and a message whose worker died goes back to the queue.
- That is not enough on its own (a killed worker's message may come back only after the visibility
  timeout; Redis restarted without persistence loses it), so every worker runs a reconciler thread
  (``workers.reconciler``, started by a worker bootstep in the worker's main process): it recovers
  jobs whose lease expired and re-publishes queued jobs the broker no longer holds. No beat process
  is needed; several workers reconciling at once is safe (every write is conditional).
- The API never publishes: it commits the job row, and a relay thread in every worker's main process
  (``workers.relay``, woken by a PostgreSQL NOTIFY) sends the message, once, whichever relay wins.
- The task never runs the job itself: ``workers.runner`` starts a fresh ``python -m workers.child``
  in its own process group. The worker's processes never import torch, so there is no CUDA context
  to break a forked pool process, and the job process is no daemon, so DataLoader workers work.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

from celery import Celery, bootsteps
from kombu import Exchange, Queue
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.db.session import make_engine, make_session_factory
from core.logs import configure_logging
from core.queues import QUEUES, WORKER_BEAT_PREFIX
from core.settings import Settings, get_settings
from core.storage import open_storage
from core.tracking.logger import MlflowLogger, start_logger
from core.webhooks.deliverer import WebhookDeliverer
from workers import runner
from workers.no_worker import queue_beat_key
from workers.reconciler import Reconciler
from workers.relay import Relay, listen_conninfo

RUN_JOB_TASK = "nncompress.run_job"
# The relay's pass between notifications (and its only wake-up without PostgreSQL): one indexed
# query that finds nothing, every 2 s per worker.
RELAY_POLL_SECONDS = 2.0


def worker_id() -> str:
    """A lease owner name that says where the job runs: host, pid and a per-process nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _ProcessResources:
    """Database sessions per OS process: a forked pool process must not reuse its parent's connections."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid: int | None = None
        self._engine: Engine | None = None
        self._factory: sessionmaker[Session] | None = None
        self._worker_id = ""

    def get(self) -> tuple[sessionmaker[Session], str]:
        if self._pid != os.getpid() or self._factory is None:
            if self._engine is not None:
                # Inherited through fork: drop the parent's pooled connections without closing them,
                # which would close the parent's sockets too (SQLAlchemy's documented fork recipe).
                self._engine.dispose(close=False)
            self._engine = make_engine(self.settings.database_url)
            self._factory = make_session_factory(self._engine)
            self._worker_id = worker_id()
            self._pid = os.getpid()
        return self._factory, self._worker_id


def transport_options(settings: Settings) -> dict[str, Any]:
    """Redis transport options: the visibility timeout, and how soon an expired message comes back.

    kombu sweeps for expired unacknowledged messages every ``unacked_restore_interval`` (10 s) but scans
    only on every ``unacked_restore_throttle``-th sweep (10). Measured here (kombu 5.7, two plain
    Celery workers, visibility timeout 2 s, a 200 s task): the duplicate delivery came 94 s after the
    first, and the task ran twice at once. With one scan per sweep and sweeps every
    ``min(10, visibility/2)`` s it came after 2.5 s (``test_redelivery_...``), where the claim turns it
    away. The cost is one ZRANGEBYSCORE per worker per sweep.
    """
    visibility = settings.visibility_timeout_seconds
    return {
        "visibility_timeout": visibility,
        "unacked_restore_interval": max(1, min(10, visibility // 2)),
        "unacked_restore_throttle": 1,
    }


def configure(app: Celery, settings: Settings) -> None:
    """Applies the settings that the design depends on (see the module docstring)."""
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        broker_transport_options=transport_options(settings),
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue="cpu",
        # The relay and the reconciler publish from a worker's threads: fail fast when the broker is down
        # (the job row is the truth, and the next pass publishes it once the broker is back).
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )


def create_celery_app(settings: Settings) -> Celery:
    """The Celery app for ``settings``, with the ``run_job`` task and the reconciler bootstep."""
    if settings.broker_url is None:
        raise ValueError("the Celery app needs settings.broker_url (NNCOMPRESS_BROKER_URL); none is set")
    app = Celery("nncompress", set_as_current=False)
    configure(app, settings)
    resources = _ProcessResources(settings)

    @app.task(name=RUN_JOB_TASK, ignore_result=True)
    def run_job(job_id: str) -> str:
        """Claims the job and supervises its child process; a duplicate delivery does nothing."""
        session_factory, owner = resources.get()
        outcome = runner.claim_and_run(job_id, owner, settings=settings, session_factory=session_factory)
        return "not_claimed" if outcome is None else outcome.value

    class ReconcilerStep(bootsteps.StartStopStep):
        """Runs the reconciler and relay threads in the worker's main process while the worker runs."""

        # After the pool, so the pool's processes are forked before this thread and its engine exist.
        requires = ("celery.worker.components:Pool",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.reconciler: Reconciler | None = None
            self.relay: Relay | None = None
            self.deliverer: WebhookDeliverer | None = None
            self.mlflow_logger: MlflowLogger | None = None

        def start(self, parent: Any) -> None:
            configure_logging(settings.log_format, settings.log_level)
            redis_broker = (settings.broker_url or "").startswith("redis")
            open_storage(settings).sweep_partial_uploads()  # parts a killed process left
            session_factory, owner = resources.get()
            self.deliverer = WebhookDeliverer(session_factory, settings)
            self.deliverer.start()
            self.mlflow_logger = start_logger(session_factory, settings)
            self.reconciler = Reconciler(
                session_factory=session_factory,
                publish=lambda job_id, queue: publish(app, job_id, queue),
                queue_depth=lambda queue: queue_depth(app, queue),
                interval_seconds=settings.reconcile_interval_seconds,
                unclaimed_after_seconds=settings.lease_seconds,
                name="nncompress-reconciler",
                on_pass=lambda: worker_beat(
                    app, owner, settings.reconcile_interval_seconds, settings.no_worker_seconds
                ),
                # Queue beats live in Redis; with another broker no job is failed for want of workers.
                queue_seen_at=(lambda queue: queue_seen_at(app, queue)) if redis_broker else None,
                no_worker_seconds=settings.no_worker_seconds,
            )
            self.reconciler.start()
            self.relay = Relay(
                session_factory=session_factory,
                publish=lambda job_id, queue: publish(app, job_id, queue),
                poll_seconds=RELAY_POLL_SECONDS,
                conninfo=listen_conninfo(settings.database_url),
            )
            self.relay.start()

        def stop(self, parent: Any) -> None:
            if self.relay is not None:
                self.relay.stop()
            if self.reconciler is not None:
                self.reconciler.stop()
            if self.deliverer is not None:
                self.deliverer.stop()
            if self.mlflow_logger is not None:
                self.mlflow_logger.stop()

    app.steps["worker"].add(ReconcilerStep)
    return app


def publish(app: Celery, job_id: str, queue: str) -> None:
    """Sends the job id to ``queue``; the only message this service ever sends (from the workers)."""
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, routing_key=queue)


def consumed_queues(app: Celery) -> list[str]:
    """The queues this worker consumes: those chosen with ``-Q``, else every configured one."""
    queues = app.amqp.queues
    return sorted(queues.consume_from or queues)


def worker_beat(app: Celery, owner: str, interval_seconds: float, no_worker_seconds: float = 600) -> None:
    """Records that this worker's reconciler just ran (``/metrics``: nncompress_worker_heartbeat_age_seconds)
    and that its queues are served (``workers.no_worker``).

    The worker key expires after a few missed passes, so a worker that is gone drops out of the
    metric; a queue key lives ``no_worker_seconds``, so its absence means nobody served the queue
    for that long.
    """
    now = str(time.time())
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        client.set(WORKER_BEAT_PREFIX + owner, now, ex=max(60, int(interval_seconds * 5)))
        for queue in consumed_queues(app):
            client.set(queue_beat_key(queue), now, ex=max(1, int(no_worker_seconds)))


def queue_seen_at(app: Celery, queue: str) -> float | None:
    """When a worker consuming ``queue`` last ran its reconciler; None if none did within the key's life."""
    with app.connection_for_read() as conn:
        raw = conn.default_channel.client.get(queue_beat_key(queue))
    return float(raw) if raw is not None else None


def queue_depth(app: Celery, queue: str) -> int | None:
    """Messages waiting in ``queue`` (not counting those a worker holds unacknowledged)."""
    with app.connection_for_read() as conn:
        ok = conn.default_channel.queue_declare(queue=queue, passive=False)
        return int(ok.message_count)


def __getattr__(name: str) -> Celery:
    # ``celery -A workers.celery_app`` looks up ``app`` here; building it lazily keeps the settings from
    # being read at import time (the API imports this module with its own settings).
    if name in ("app", "celery"):
        global _app
        if _app is None:
            _app = create_celery_app(get_settings())
        return _app
    raise AttributeError(name)


_app: Celery | None = None
