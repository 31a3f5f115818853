"""Prometheus metrics: HTTP requests by route and status, jobs by status (counted at scrape time)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db.models import Job, JobStatus


class JobsByStatus:
    """A collector that counts jobs per status in the database on every scrape."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("nncompress_jobs", "Jobs in the database by status", labels=["status"])
        try:
            with self.session_factory() as session:
                rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        except SQLAlchemyError:
            return  # /readyz reports the database; a scrape must not fail because of it
        counts = {str(status): int(count) for status, count in rows}
        for status in JobStatus:
            gauge.add_metric([status.value], counts.get(status.value, 0))
        yield gauge


class Metrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
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
