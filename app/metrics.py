"""Prometheus metrics of the API process.

Counted per request: HTTP requests by route and status, and their latency. Read at scrape time:
jobs by status and queue depth (database counts; in distributed mode the queue depth is the broker's
LLEN, which is what workers will actually receive), the age of each running job's heartbeat by
worker, and how long ago each worker's reconciler last ran (the worker heartbeat; Redis keys in
distributed mode, the local reconciler in embedded mode), and the stage duration histogram, from the
durations the workers write on each stage's closing event (so it needs no port on the workers and
covers every worker process, whatever its pool).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.db.models import Job, JobEvent, JobStatus
from core.db.types import utcnow
from core.queues import QUEUES, WORKER_BEAT_PREFIX
from core.settings import Settings

log = logging.getLogger(__name__)


class JobsByStatus:
    """Jobs per status and queued jobs per queue, counted in the database on every scrape."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("nncompress_jobs", "Jobs in the database by status", labels=["status"])
        queued = GaugeMetricFamily(
            "nncompress_jobs_queued", "Jobs waiting to be claimed, by queue (database)", labels=["queue"]
        )
        beats = GaugeMetricFamily(
            "nncompress_job_heartbeat_age_seconds",
            "Seconds since the oldest heartbeat among a worker's running jobs",
            labels=["worker"],
        )
        now = utcnow()
        try:
            with self.session_factory() as session:
                by_status = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
                by_queue = session.execute(
                    select(Job.queue, func.count()).where(Job.status == "queued").group_by(Job.queue)
                ).all()
                running = session.execute(
                    select(Job.lease_owner, func.min(Job.heartbeat_at))
                    .where(Job.status.in_(("running", "cancelling")), Job.lease_owner.is_not(None))
                    .group_by(Job.lease_owner)
                ).all()
        except SQLAlchemyError:
            return  # /readyz reports the database; a scrape must not fail because of it
        counts = {str(status): int(count) for status, count in by_status}
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        depth = {str(q): int(n) for q, n in by_queue}
        for q in QUEUES:
            queued.add_metric([q], depth.get(q, 0))
        for owner, oldest in running:
            if oldest is not None:
                beats.add_metric([str(owner)], max(0.0, (now - oldest).total_seconds()))
        yield from (jobs, queued, beats)


# Stages run from well under a second (verifying a small model) to hours (fine-tuning).
STAGE_BUCKETS = (
    0.1,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
)
_STAGE_END_EVENTS = ("stage", "succeeded", "failed", "cancelled")


class StageDurations:
    """``nncompress_stage_duration_seconds``: a histogram of the ``stage_seconds`` that workers record
    on the event closing each stage (workers.state). Each scrape reads only the events added since the
    last one (an id cursor), so the cost does not grow with history; the first scrape reads it all."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory
        self._cursor = 0
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._lock = threading.Lock()

    def _ingest(self) -> None:
        with self.session_factory() as session:
            rows = session.execute(
                select(JobEvent.id, JobEvent.data)
                .where(JobEvent.id > self._cursor, JobEvent.type.in_(_STAGE_END_EVENTS))
                .order_by(JobEvent.id)
            ).all()
        for event_id, data in rows:
            self._cursor = max(self._cursor, int(event_id))
            timed = (data or {}).get("stage_seconds")
            if not isinstance(timed, dict) or "stage" not in timed:
                continue
            seconds = float(timed.get("seconds") or 0.0)
            counts = self._buckets.setdefault(str(timed["stage"]), [0] * (len(STAGE_BUCKETS) + 1))
            counts[bisect.bisect_left(STAGE_BUCKETS, seconds)] += 1
            self._sums[str(timed["stage"])] = self._sums.get(str(timed["stage"]), 0.0) + seconds

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                self._ingest()
            except SQLAlchemyError:
                return
            histogram = HistogramMetricFamily(
                "nncompress_stage_duration_seconds",
                "Wall time of a job's pipeline stage, recorded by the worker when the stage ends",
                labels=["stage"],
            )
            for stage, counts in sorted(self._buckets.items()):
                cumulative, buckets = 0, []
                for bound, n in zip((*STAGE_BUCKETS, float("inf")), counts, strict=True):
                    cumulative += n
                    buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
                histogram.add_metric([stage], buckets, sum_value=self._sums[stage])
        yield histogram


def _worker_families(depth_help: str) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    """The queue-depth and heartbeat-age gauges: one pair of series whichever way jobs run.

    Args:
        depth_help: the depth gauge's help text, saying what waits (broker messages or queued jobs).

    Returns:
        ``(depth, beats)``, empty; the caller adds a sample per queue and per worker.
    """
    depth = GaugeMetricFamily("nncompress_queue_depth", depth_help, labels=["queue"])
    beats = GaugeMetricFamily(
        "nncompress_worker_heartbeat_age_seconds",
        "Seconds since the worker's reconciler last completed a pass",
        labels=["worker"],
    )
    return depth, beats


class BrokerQueues:
    """Messages waiting in each Redis queue (LLEN) and the age of each worker's last beat."""

    def __init__(self, broker_url: str) -> None:
        import redis

        self.client: Any = redis.Redis.from_url(broker_url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def collect(self) -> Iterator[Metric]:
        depth, beats = _worker_families(
            "Messages waiting in the broker queue (jobs no relay has published yet: nncompress_jobs only)"
        )
        try:
            for q in QUEUES:
                depth.add_metric([q], int(self.client.llen(q)))
            now = time.time()
            for key in self.client.scan_iter(match=WORKER_BEAT_PREFIX + "*", count=100):
                value = self.client.get(key)
                if value is not None:
                    name = key.decode()[len(WORKER_BEAT_PREFIX) :]
                    beats.add_metric([name], max(0.0, now - float(value)))
        except Exception:  # the broker is down: /readyz says so; the scrape still answers
            log.warning("metrics: broker unreachable", exc_info=True)
            return
        yield from (depth, beats)


class EmbeddedWorker:
    """The embedded dispatcher's queue depth (database) and its reconciler's last pass."""

    def __init__(self, dispatcher: Callable[[], Any], session_factory: sessionmaker[Session]) -> None:
        self.dispatcher, self.session_factory = dispatcher, session_factory

    def collect(self) -> Iterator[Metric]:
        depth, beats = _worker_families("Jobs waiting for the embedded worker")
        try:
            with self.session_factory() as session:
                rows = dict(
                    session.execute(
                        select(Job.queue, func.count()).where(Job.status == "queued").group_by(Job.queue)
                    ).all()
                )
        except SQLAlchemyError:
            return
        for q in QUEUES:
            depth.add_metric([q], int(rows.get(q, 0)))
        reconciler = getattr(self.dispatcher(), "reconciler", None)
        last = getattr(reconciler, "last_pass_at", None)
        if last is not None:
            beats.add_metric(["embedded"], max(0.0, time.time() - last))
        yield from (depth, beats)


class Metrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings | None = None,
        dispatcher: Callable[[], Any] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nncompress_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nncompress_http_request_duration_seconds",
            "Time to the response's first byte, by method and route template",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(JobsByStatus(session_factory))
        self.registry.register(StageDurations(session_factory))
        if settings is not None and settings.broker_url and settings.broker_url.startswith("redis"):
            self.registry.register(BrokerQueues(settings.broker_url))
        elif dispatcher is not None:
            self.registry.register(EmbeddedWorker(dispatcher, session_factory))


class MetricsMiddleware:
    """Counts every HTTP request by its route template (``/v1/jobs/{job_id}``), never the raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
