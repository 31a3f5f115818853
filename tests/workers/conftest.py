"""Fixtures of the worker tests: job factories, a private Redis server, real Celery worker processes.

The Redis server is our own (a free port, no persistence) so a test may restart it without touching
the shared one on 6379. Timing is shortened (lease 3 s, heartbeat 1 s, reconcile every 1 s) so the
fault tests finish in seconds; every wait polls with a deadline.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.auth.tenants import DEFAULT_TENANT, get_or_create_tenant
from core.db.models import Job, JobEvent, Model
from core.db.session import make_engine, make_session_factory
from core.settings import Settings
from tests.s3_server import s3_bucket, s3_server  # noqa: F401 - fixtures of the object-storage tests

REPO = Path(__file__).resolve().parents[2]
TARGET = "tests.workers.workloads:run"
# The seed's job: L1-norm pruning of half the channels of every layer but the classifier, with speedup.
SEED_SPEC = {
    "pruner": "l1norm",
    "config_list": [
        {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
        {"exclude": True, "op_names": ["fc2"]},
    ],
    "latency_runs": 3,
}
FAST = {
    "lease_seconds": 3,
    "heartbeat_seconds": 1,
    "reconcile_interval_seconds": 1,
    "job_time_limit_seconds": 60,
    "max_attempts": 3,
}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Polls ``predicate`` until it returns something truthy; fails with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@dataclass
class Jobs:
    """Creates jobs and reads them back, on one database."""

    url: str
    storage: Path
    session_factory: Any = field(init=False)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url)
        self.session_factory = make_session_factory(self.engine)

    def create(
        self, *, queue: str = "cpu", max_attempts: int = 3, model_id: str | None = None, **spec: Any
    ) -> str:
        with self.session_factory() as session:
            tenant_id = get_or_create_tenant(session, DEFAULT_TENANT)[0].id
            if model_id is None:
                model = Model(
                    tenant_id=tenant_id,
                    sha256="0" * 64,
                    size_bytes=1,
                    format="safetensors",
                    filename="m.st",
                    storage_key="models/x",
                )
                session.add(model)
                session.flush()
                model_id = model.id
            job = Job(
                tenant_id=tenant_id,
                model_id=model_id,
                spec=spec,
                queue=queue,
                device="cpu",
                max_attempts=max_attempts,
            )
            session.add(job)
            session.commit()
            return job.id

    def upload_seed_model(self) -> str:
        """Stores the shipped, trained MNIST weights as an uploaded model (what POST /v1/models does)."""
        from nncompress.data import mnist_net_weights_path

        data = mnist_net_weights_path().read_bytes()
        with self.session_factory() as session:
            model = Model(
                tenant_id=get_or_create_tenant(session, DEFAULT_TENANT)[0].id,
                sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                format="safetensors",
                architecture="mnist_net",
                filename="mnist_net.safetensors",
                storage_key="pending",
            )
            session.add(model)
            session.flush()
            model.storage_key = f"models/{model.id}/upload.bin"
            path = self.storage / model.storage_key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            session.commit()
            return model.id

    def get(self, job_id: str) -> Job:
        with self.session_factory() as session:
            job = session.get(Job, job_id)
            assert job is not None
            session.expunge(job)
            return job

    def events(self, job_id: str) -> list[JobEvent]:
        with self.session_factory() as session:
            return list(
                session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
            )

    def wait_status(self, job_id: str, statuses: set[str], timeout: float) -> Job:
        wait_for(lambda: self.get(job_id).status in statuses, timeout, f"job {job_id} to reach {statuses}")
        return self.get(job_id)

    def cancel(self, job_id: str) -> None:
        # What the API does for a running job.
        with self.session_factory() as session:
            job = session.get(Job, job_id)
            assert job is not None and job.status == "running"
            job.status = "cancelling"
            job.cancel_requested = True
            session.commit()


def marker_lines(path: Path) -> list[tuple[int, int]]:
    """``(pid, attempt)`` of every run of a test workload, in order."""
    return [(pid, attempt) for pid, attempt, _ in marker_runs(path)]


def marker_runs(path: Path) -> list[tuple[int, int, str | None]]:
    """``(pid, attempt, resume_from)`` of every run of a test workload, in order."""
    if not path.exists():
        return []
    runs = []
    for line in path.read_text().splitlines():
        pid, attempt, resume = line.split()
        runs.append((int(pid), int(attempt), None if resume == "-" else resume))
    return runs


@pytest.fixture
def pg_jobs(pg_url: str, tmp_path: Path) -> Iterator[Jobs]:
    jobs = Jobs(pg_url, tmp_path / "storage")
    yield jobs
    jobs.engine.dispose()


@pytest.fixture
def db_jobs(db_url: str, tmp_path: Path) -> Iterator[Jobs]:
    jobs = Jobs(db_url, tmp_path / "storage")
    yield jobs
    jobs.engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server of our own, without persistence, that a test may restart."""

    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        def ping() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(ping, 10, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(_free_port())
    server.start()
    yield server
    server.stop()


@dataclass
class WorkerProcess:
    """A real ``celery -A workers.celery_app worker`` in its own process group."""

    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill_group(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts Celery workers on the given settings (env ``NNCOMPRESS_*``); all are stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(
        settings: Settings,
        *,
        name: str = "w1",
        queues: str = "cpu",
        target: str | None = TARGET,
        celery_cli: bool = False,
    ) -> WorkerProcess:
        env = dict(os.environ)
        # The fields the test set, as a deployment would write them (lists comma-separated).
        for key, value in settings.model_dump(exclude_unset=True).items():
            if value is not None:
                text = ",".join(value) if isinstance(value, list) else str(value)
                env[f"NNCOMPRESS_{key.upper()}"] = text
        env.pop("NNCOMPRESS_WORKER_JOB_TARGET", None)
        if target:
            env["NNCOMPRESS_WORKER_JOB_TARGET"] = target
        env["PYTHONPATH"] = str(REPO)
        log = tmp_path / f"worker-{name}-{len(started)}.log"
        with log.open("wb") as fh:
            node = f"{name}-{len(started)}@%h"
            if celery_cli:  # the documented plain form, with Celery's own defaults
                argv = ["-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queues, "-n", node]
            else:
                argv = ["-m", "workers", "--queues", queues, "--name", node]
            proc = subprocess.Popen(
                [sys.executable, *argv, "--loglevel", "INFO"],
                cwd=REPO,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(proc, log)
        started.append(worker)
        wait_for(
            lambda: "ready." in worker.log_text() or proc.poll() is not None, 60, "the worker to be ready"
        )
        assert proc.poll() is None, worker.log_text()
        return worker

    yield start
    for worker in started:
        worker.stop()


def object_store_settings(
    pg_url: str, redis_url: str, s3_url: str, *, storage_dir: Path, cache_dir: Path, **extra: Any
) -> Settings:
    """The distributed mode on object storage (PostgreSQL, Redis, S3) with the fast lease timings.

    Args:
        storage_dir: the local storage folder, which the tests check stays unused.
        cache_dir: this process's cache of downloaded objects.
        **extra: further settings (tracking, part sizes).

    Returns:
        The settings for one API or worker process.
    """
    return Settings(
        database_url=pg_url,
        broker_url=redis_url,
        storage_dir=storage_dir,
        storage_url=s3_url,
        cache_dir=cache_dir,
        **FAST,
        **extra,
    )


@pytest.fixture
def celery_settings(pg_url: str, redis_server: RedisServer, tmp_path: Path) -> Settings:
    return Settings(
        database_url=pg_url, broker_url=redis_server.url, storage_dir=tmp_path / "storage", **FAST
    )
