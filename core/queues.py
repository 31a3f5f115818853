"""Names that the API and the workers must agree on: the job queues, the workers' Redis keys, and the
PostgreSQL channel that announces new jobs."""

from __future__ import annotations

__all__ = ["JOBS_CHANNEL", "QUEUES", "WORKER_BEAT_PREFIX"]

# A job's queue follows its device: ``cpu`` or ``gpu`` (one Celery queue each).
QUEUES = ("cpu", "gpu")

# One key per worker process, refreshed while it runs (workers.celery_app.worker_beat); /metrics
# lists the live ones.
WORKER_BEAT_PREFIX = "nncompress:worker-beat:"

# The channel a trigger on ``jobs`` notifies (payload: the job id) for every inserted job (migration
# 0006); the workers' relays LISTEN on it to publish new jobs at once (workers.relay).
JOBS_CHANNEL = "nncompress_jobs"
