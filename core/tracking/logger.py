"""Logs each finished job to MLflow as one run, retries failures with exponential backoff, records
every attempt on the job (``mlflow_deliveries``, ``GET /v1/jobs/{id}/mlflow-deliveries``).

Runs as a thread beside the webhook deliverer: in the embedded dispatcher and in every Celery
worker's main process, and only where ``MLFLOW_TRACKING_URI`` is set. Several loggers may poll the
same table; each claims a row with a conditional UPDATE (``at`` from NULL to now), so an attempt is
made once. A run is found again by its ``nncompress.job_id`` tag, so an attempt that died half way
is completed by the next one instead of leaving a second run: the run is ended last, and a job
whose run is already ended is only recorded as delivered.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Job, MlflowDelivery, Tenant
from core.db.types import utcnow
from core.outbox import OutboxPoller
from core.settings import Settings
from core.storage import Storage, open_storage
from core.tracking.content import JOB_ID_TAG, RunContent, job_metrics, job_params, job_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["JobSnapshot", "LoggedRun", "MlflowLogger", "start_logger"]

log = logging.getLogger(__name__)

# A claimed attempt with no outcome after this long was abandoned by a logger that died; it uploads
# the job's artifacts, so it may legitimately take minutes.
ABANDONED_AFTER_SECONDS = 3600.0
MODEL_DIR = "model"  # the job's artifacts in the run; a registered version's source
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


@dataclass(frozen=True)
class JobSnapshot:
    """What a run is made of, read from the database before MLflow is called."""

    id: str
    status: str
    experiment: str
    registered_model: str | None
    content: RunContent
    spec: dict[str, Any]
    artifacts: dict[str, str]  # name -> storage key
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class LoggedRun:
    experiment_id: str
    run_id: str
    model_version: str | None


class MlflowLogger(OutboxPoller):
    """One pass with :meth:`run_once`; a background thread with :meth:`start`/:meth:`stop`."""

    table = MlflowDelivery
    thread_name = "nncompress-mlflow"

    def __init__(self, session_factory: Callable[[], Session], settings: Settings) -> None:
        if settings.mlflow_tracking_uri is None:
            raise ValueError("MlflowLogger needs settings.mlflow_tracking_uri (MLFLOW_TRACKING_URI)")
        super().__init__(session_factory, settings)
        self.tracking_uri = settings.mlflow_tracking_uri

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.settings)

    @cached_property
    def client(self) -> MlflowClient:
        # Imported here: mlflow is an optional extra, and only a deployment that tracks needs it.
        from mlflow import MlflowClient

        # MLflow retries a failed request itself (7 times, backoff factor 2: minutes) within one
        # call; this logger retries whole attempts with its own backoff and records each, so one
        # request is one try. They are environment variables only; a deployment's own values win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.settings.mlflow_timeout_seconds))
        # Else every ended run prints its URL to stdout, outside the service's structured logs.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def backoff_base(self) -> float:
        return self.settings.mlflow_backoff_seconds

    def poll_seconds(self) -> float:
        return self.settings.mlflow_poll_seconds

    def _attempt(self, delivery_id: int) -> int:
        with self.session_factory() as session:
            if not self._claim(session, delivery_id):
                return 0  # another logger took it
            row = session.get(MlflowDelivery, delivery_id)
            job = session.get(Job, row.job_id) if row is not None else None
            if row is None or job is None or job.mlflow is None:
                return 0
            snapshot = self._snapshot(session, job)
        started = time.monotonic()
        try:
            logged: LoggedRun | None = self.log_job(snapshot)
            error = None
        except Exception as exc:  # any failure of the server or the network is one failed attempt
            logged, error = None, f"{type(exc).__name__}: {exc}"[:1000]
        self._record(delivery_id, logged, error, time.monotonic() - started)
        return 1

    def _snapshot(self, session: Session, job: Job) -> JobSnapshot:
        tenant = session.get(Tenant, job.tenant_id)
        asked = job.mlflow or {}
        content = RunContent(
            params=job_params(job.spec),
            metrics=job_metrics(job.metrics),
            tags=job_tags(
                job_id=job.id,
                tenant_id=job.tenant_id,
                tenant_name=tenant.name if tenant is not None else None,
                status=str(job.status),
                model_id=job.model_id,
                error_type=job.error_type,
            ),
        )
        return JobSnapshot(
            id=job.id,
            status=str(job.status),
            experiment=str(asked.get("experiment") or self.settings.mlflow_experiment),
            registered_model=asked.get("registered_model"),
            content=content,
            spec=job.spec,
            artifacts={a.name: a.storage_key for a in job.artifacts},
            started_at=job.started_at or job.created_at,
            finished_at=job.finished_at,
        )

    def log_job(self, job: JobSnapshot) -> LoggedRun:
        """Writes the job's run (parameters, metrics, tags, artifacts), registers its model when asked
        and the job succeeded, and ends the run; completes a run an earlier attempt left unfinished."""
        from mlflow.entities import Metric, Param, RunTag

        client = self.client
        experiment_id = self._experiment_id(job.experiment)
        runs = client.search_runs(
            [experiment_id], filter_string=f"tags.`{JOB_ID_TAG}` = '{job.id}'", max_results=1
        )
        if runs and runs[0].info.status != "RUNNING":  # ended: an earlier attempt did everything
            run_id = runs[0].info.run_id
            return LoggedRun(experiment_id, run_id, self._existing_version(job, run_id))
        if runs:
            run = runs[0]
        else:
            run = client.create_run(
                experiment_id, start_time=_ms(job.started_at), tags=job.content.tags, run_name=f"job-{job.id}"
            )
        run_id = run.info.run_id
        now = _ms(utcnow())
        metrics = [Metric(p.key, p.value, now, p.step) for p in job.content.metrics]
        client.log_batch(
            run_id,
            # A half-done earlier attempt logged them already: metric history would hold them twice.
            metrics=[] if run.data.metrics else metrics,
            params=[Param(k, v) for k, v in job.content.params.items()],
            tags=[RunTag(k, v) for k, v in job.content.tags.items()],
        )
        client.log_dict(run_id, job.spec, "nncompress/spec.json")
        if job.artifacts:
            self._log_artifacts(run_id, job.artifacts)
        version = None
        if job.registered_model and job.status == "succeeded":
            version = self._register(job, run_id, f"{run.info.artifact_uri}/{MODEL_DIR}")
        client.set_terminated(
            run_id, status=RUN_STATUS.get(job.status, "FINISHED"), end_time=_ms(job.finished_at)
        )
        return LoggedRun(experiment_id, run_id, version)

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except MlflowException as exc:  # another logger created it just now
            experiment = self.client.get_experiment_by_name(name)
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" or experiment is None:
                raise
            return str(experiment.experiment_id)

    def _log_artifacts(self, run_id: str, artifacts: dict[str, str]) -> None:
        # Files named as the job names them (an object store's cache names them by key), linked, not
        # copied: a checkpoint may be gigabytes.
        with tempfile.TemporaryDirectory(prefix="mlflow-") as tmp:
            for name, key in artifacts.items():
                target = Path(tmp, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(self.storage.local_path(key).resolve())
            self.client.log_artifacts(run_id, tmp, artifact_path=MODEL_DIR)

    def _register(self, job: JobSnapshot, run_id: str, source: str) -> str:
        from mlflow.exceptions import MlflowException

        name = str(job.registered_model)
        try:
            self.client.create_registered_model(name, tags={"nncompress.created_by_job": job.id})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        existing = self._existing_version(job, run_id)
        if existing is not None:
            return existing
        version = self.client.create_model_version(
            name, source=source, run_id=run_id, tags={JOB_ID_TAG: job.id}, await_creation_for=0
        )
        return str(version.version)

    def _existing_version(self, job: JobSnapshot, run_id: str) -> str | None:
        if not job.registered_model or job.status != "succeeded":
            return None
        # The schema allows only letters, digits, '_', '-', '.' and spaces in the name: no quoting issue.
        found = self.client.search_model_versions(f"name = '{job.registered_model}' and run_id = '{run_id}'")
        return str(found[0].version) if found else None

    def _record(self, delivery_id: int, logged: LoggedRun | None, error: str | None, seconds: float) -> None:
        now = utcnow()
        with self.session_factory() as session:
            row = session.get(MlflowDelivery, delivery_id)
            assert row is not None
            row.error = error
            if logged is not None:
                row.experiment_id, row.run_id, row.model_version = (
                    logged.experiment_id,
                    logged.run_id,
                    logged.model_version,
                )
                row.delivered_at = now
            elif row.attempt < self.settings.mlflow_max_attempts:
                session.add(
                    MlflowDelivery(
                        job_id=row.job_id,
                        attempt=row.attempt + 1,
                        next_attempt_at=now + timedelta(seconds=self.backoff(row.attempt)),
                    )
                )
            session.commit()
            job_id, attempt = row.job_id, row.attempt
        log.log(
            logging.INFO if logged else logging.WARNING,
            "mlflow attempt %d: %s (%.1f s)",
            attempt,
            f"run {logged.run_id}" if logged else error,
            seconds,
            extra={"job_id": job_id},
        )

    def _recover_abandoned(self) -> None:
        """Claimed rows with no outcome long after they were claimed: their logger died mid-attempt."""
        cutoff = utcnow() - timedelta(seconds=ABANDONED_AFTER_SECONDS)
        with self.session_factory() as session:
            stale = list(
                session.scalars(
                    select(MlflowDelivery.id).where(
                        MlflowDelivery.at < cutoff,
                        MlflowDelivery.error.is_(None),
                        MlflowDelivery.delivered_at.is_(None),
                    )
                )
            )
        for delivery_id in stale:
            self._record(delivery_id, None, "the logger stopped during the attempt", 0.0)


def _ms(at: datetime | None) -> int:
    return int((at or utcnow()).timestamp() * 1000)


def start_logger(session_factory: Callable[[], Session], settings: Settings) -> MlflowLogger | None:
    """A started logger where MLflow tracking is configured, else None."""
    if settings.mlflow_tracking_uri is None:
        return None
    logger = MlflowLogger(session_factory, settings)
    logger.start()
    return logger
