"""Names that the API and the workers must agree on: the job queues and the workers' Redis keys."""

from __future__ import annotations

__all__ = ["QUEUES", "WORKER_BEAT_PREFIX"]

# A job's queue follows its device: ``cpu`` or ``gpu`` (one Celery queue each).
QUEUES = ("cpu", "gpu")

# One key per worker process, refreshed while it runs (workers.celery_app.worker_beat); /metrics
# lists the live ones.
WORKER_BEAT_PREFIX = "nncompress:worker-beat:"
