"""Metrics that worker processes observe themselves: how long each pipeline stage ran.

The supervising side of a job (``workers.runner``) sees the job's stage change on its polls and
observes the time spent in the stage that ended. The registry is process-wide: the embedded API
serves it on its own /metrics, a Celery worker on ``worker_metrics_port``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

WORKER_REGISTRY = CollectorRegistry()

# Stages run from well under a second (verifying a small model) to hours (fine-tuning).
STAGE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)

STAGE_SECONDS = Histogram(
    "nncompress_stage_duration_seconds",
    "Wall time of a job's pipeline stage, observed by the worker when the stage ends",
    ["stage"],
    buckets=STAGE_BUCKETS,
    registry=WORKER_REGISTRY,
)


class StageTimer:
    """Feeds the polls' view of a job's stage; observes a stage's duration when it changes or ends."""

    def __init__(self, clock_start: float) -> None:
        self.stage: str | None = None
        self.since = clock_start

    def seen(self, stage: str | None, now: float) -> None:
        if stage == self.stage:
            return
        if self.stage is not None:
            STAGE_SECONDS.labels(self.stage).observe(max(0.0, now - self.since))
        self.stage, self.since = stage, now

    def end(self, now: float) -> None:
        self.seen(None, now)
