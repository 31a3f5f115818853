"""Jobs logged to a real MLflow tracking server, read back through MLflow's own client.

The server is ``mlflow server`` on 127.0.0.1 (SQLite backend store, file artifact root), started once
for the module; jobs run in the embedded server's real job processes, and once on a real Celery
worker (PostgreSQL, Redis, the S3 store), whose main process logs the run. With the tracking server
unreachable, the job succeeds all the same and shows the failed attempt and the pending retry.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.auth.tenants import DEFAULT_TENANT
from app.main import create_app
from core.settings import Settings
from tests.app.dataset_files import uploaded_mnist_npz
from tests.app.factories import uploaded_trained_mnist
from tests.conftest import bearer
from tests.s3_server import S3Bucket
from tests.workers.conftest import FAST, RedisServer, WorkerProcess, object_store_settings, wait_for

pytestmark = pytest.mark.slow

# 50% of the channels of every layer but the classifier, 2 short epochs of fine-tuning, static int8.
CONFIG = [
    {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
    {"exclude": True, "op_names": ["fc2"]},
]
# An explicit latency budget times every batch size asked for; the default (a share of the job)
# may leave batch 8 out when a loaded machine stalls the first pass, and these tests read both figures.
QUICK = {"latency_runs": 2, "latency_batch_sizes": [1, 8], "latency_budget_s": 5}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MlflowServer:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "server",
                "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                "--default-artifact-root", (root / "artifacts").as_uri(),
                "--host", "127.0.0.1",
                "--port", str(port),
                "--workers", "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its uvicorn workers go with it (killpg)
        )  # fmt: skip
    server = MlflowServer(proc, f"http://127.0.0.1:{port}", log)

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{server.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        # Creating its SQLite schema took 30 s on this loaded 2-core machine; the process exiting
        # ends the wait at once.
        wait_for(healthy, timeout=240, what="mlflow server /health", interval=0.25)
        yield server
    finally:
        # SIGKILL: its store is this test's temp folder, and SIGTERM took over 10 s to end it here.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Forwarder:
    """A TCP port that refuses connections until :meth:`open` makes it forward them to ``target``:
    a tracking server that is down, then back, at the same address."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = _free_port()
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                inbound, _ = listener.accept()
            except OSError:  # closed
                return
            outbound = socket.create_connection(self.target)
            threading.Thread(target=self._relay, args=(inbound, outbound), daemon=True).start()

    @classmethod
    def _relay(cls, inbound: socket.socket, outbound: socket.socket) -> None:
        back = threading.Thread(target=cls._pipe, args=(outbound, inbound), daemon=True)
        back.start()
        cls._pipe(inbound, outbound)
        back.join()
        inbound.close()
        outbound.close()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:  # the other side reset the connection
            pass


def _client(tmp_path: Path, **overrides: Any) -> TestClient:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        storage_dir=tmp_path / "storage",
        mlflow_poll_seconds=0.2,
        **{**FAST, **overrides},
    )
    return TestClient(create_app(settings))


def _finished(client: TestClient, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    location = response.headers["Location"]

    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(location).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    job: dict[str, Any] = wait_for(ended, timeout=timeout, what="the job to end", interval=0.1)
    return job


def _deliveries(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(f"/v1/jobs/{job_id}/mlflow-deliveries").json()["items"]
    return items


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_a_finetuned_job_is_one_mlflow_run_with_its_metrics_artifacts_and_model_version(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    # Given the embedded server tracking to a real MLflow server,
    tag = uuid.uuid4().hex[:8]
    experiment, registered = f"mnist-{tag}", f"mnist-net-{tag}"
    with _client(tmp_path, mlflow_tracking_uri=mlflow_server.url) as client:
        body = {
            "model_id": uploaded_trained_mnist(client),
            "config_list": CONFIG,
            "dataset_id": uploaded_mnist_npz(client, 400)["id"],
            "val_fraction": 0.25,
            "finetune": {"epochs": 2, "lr": 0.01, "batch_size": 32},
            "quantize": {"mode": "static", "calibration_batches": 2},
            "options": QUICK,
            "mlflow": {"experiment": experiment, "registered_model": registered},
        }
        # when a job prunes, fine-tunes 2 epochs and quantizes,
        job = _finished(client, body, timeout=300)
        assert job["status"] == "succeeded", job["error"]

        def delivered() -> list[dict[str, Any]] | None:
            items = _deliveries(client, job["id"])
            return items if items and items[-1]["delivered_at"] else None

        # the logger writes its run after the job's result is stored, in one attempt.
        (delivery,) = wait_for(delivered, timeout=240, what="the MLflow delivery", interval=0.2)
    assert delivery["attempt"] == 1 and delivery["error"] is None
    assert _at(delivery["at"]) >= _at(job["finished_at"])
    assert delivery["model_version"] is not None

    mlflow = mlflow_server.client()
    exp = mlflow.get_experiment_by_name(experiment)
    assert exp is not None and exp.experiment_id == delivery["experiment_id"]
    runs = mlflow.search_runs([exp.experiment_id], filter_string=f"tags.`nncompress.job_id` = '{job['id']}'")
    assert [r.info.run_id for r in runs] == [delivery["run_id"]]  # one run for the job
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == f"job-{job['id']}"

    # Parameters: the pruner and config_list, fine-tuning and quantization settings as the job ran them.
    params = run.data.params
    assert params["pruner"] == "l1norm" and params["config_list"] == (
        '[{"sparsity_per_layer":0.5,"op_types":["Linear","Conv2d"]},{"exclude":true,"op_names":["fc2"]}]'
    )
    assert params["finetune.epochs"] == "2" and params["finetune.lr"] == "0.01"
    assert params["finetune.batch_size"] == "32"
    assert params["quantize.mode"] == "static" and params["quantize.calibration_batches"] == "2"

    # Metrics: before/after as the job recorded them, and the per-epoch accuracy as a step series.
    m, recorded = run.data.metrics, job["metrics"]
    for side in ("before", "after"):
        for key in ("params", "state_dict_bytes", "macs", "accuracy"):
            assert m[f"{side}.{key}"] == pytest.approx(recorded[side][key]), (side, key)
        assert m[f"{side}.latency.b8.median_ms"] == pytest.approx(
            next(s["median_ms"] for s in recorded[side]["latency"] if s["batch_size"] == 8)
        )
    assert m["after.params"] < m["before.params"]
    history = mlflow.get_metric_history(run.info.run_id, "finetune.epochs.val_top1")
    assert [(h.step, h.value) for h in sorted(history, key=lambda h: h.step)] == [
        (e["epoch"], pytest.approx(e["val_top1"])) for e in recorded["finetune"]["epochs"]
    ]
    assert [e["epoch"] for e in recorded["finetune"]["epochs"]] == [1, 2]
    assert m["finetune.finetuned.top1"] == pytest.approx(recorded["finetune"]["finetuned"]["top1"])
    assert m["quantized.bytes.int8_onnx"] == recorded["quantized"]["bytes"]["int8_onnx"]

    # Tags: the job, its tenant and status.
    tags = run.data.tags
    assert tags["nncompress.job_id"] == job["id"] and tags["nncompress.status"] == "succeeded"
    assert tags["nncompress.tenant"] == DEFAULT_TENANT and tags["nncompress.model_id"] == job["model_id"]

    # Artifacts: every file of the job, byte for byte, and the spec.
    listed = sorted(a.path for a in mlflow.list_artifacts(run.info.run_id, "model"))
    assert listed == sorted(f"model/{a['name']}" for a in job["artifacts"])
    for artifact in job["artifacts"]:
        local = mlflow.download_artifacts(run.info.run_id, f"model/{artifact['name']}", str(tmp_path))
        assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == artifact["sha256"], artifact["name"]
    assert [a.path for a in mlflow.list_artifacts(run.info.run_id, "nncompress")] == ["nncompress/spec.json"]

    # The compressed model: a new version of the registered model, made from this run's model folder.
    version = mlflow.get_model_version(registered, delivery["model_version"])
    assert version.run_id == run.info.run_id and version.source == f"{run.info.artifact_uri}/model"
    assert version.tags["nncompress.job_id"] == job["id"]
    assert [v.version for v in mlflow.search_model_versions(f"name = '{registered}'")] == [version.version]


def test_with_mlflow_unreachable_the_job_succeeds_and_shows_the_failed_attempt(tmp_path: Path) -> None:
    # Given a tracking URI where nothing listens, and a first retry delay far beyond the test,
    closed = f"http://127.0.0.1:{_free_port()}"
    with _client(tmp_path, mlflow_tracking_uri=closed, mlflow_backoff_seconds=600) as client:
        body = {
            "model_id": uploaded_trained_mnist(client),
            "config_list": CONFIG,
            "options": QUICK,
            "mlflow": {"registered_model": "never"},
        }
        # when a job runs, it succeeds as it would without MLflow,
        job = _finished(client, body, timeout=180)
        assert job["status"] == "succeeded", job["error"]
        assert {a["name"] for a in job["artifacts"]} >= {"model.safetensors", "manifest.json", "report.json"}

        def attempted() -> list[dict[str, Any]] | None:
            items = _deliveries(client, job["id"])
            return items if items and items[0]["error"] else None

        # and the job shows the failed attempt with its error, and the next one pending.
        first, retry = wait_for(attempted, timeout=120, what="the first MLflow attempt", interval=0.2)
        still = client.get(f"/v1/jobs/{job['id']}").json()
    assert first["attempt"] == 1 and first["delivered_at"] is None and first["run_id"] is None
    assert "Connection refused" in first["error"] or "ConnectionError" in first["error"], first["error"]
    # The job had ended, result stored, before MLflow was first tried: it never waited for it.
    assert _at(job["finished_at"]) <= _at(first["at"])
    assert retry["attempt"] == 2 and retry["at"] is None and retry["error"] is None
    assert _at(retry["next_attempt_at"]) >= _at(first["at"]) + timedelta(seconds=600)
    assert still["status"] == "succeeded" and still["updated_at"] == job["updated_at"]


def test_a_job_logged_while_mlflow_was_down_is_logged_once_it_is_back(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    # Given the tracking server's address refusing connections (the server down),
    port = int(mlflow_server.url.rsplit(":", 1)[1])
    forwarder = Forwarder(("127.0.0.1", port))
    experiment = f"retry-{uuid.uuid4().hex[:8]}"
    settings = {"mlflow_tracking_uri": forwarder.url, "mlflow_backoff_seconds": 1.0, "mlflow_max_attempts": 6}
    try:
        with _client(tmp_path, **settings) as client:
            body = {"model_id": uploaded_trained_mnist(client), "config_list": CONFIG, "options": QUICK}
            job = _finished(client, {**body, "mlflow": {"experiment": experiment}}, timeout=180)
            assert job["status"] == "succeeded", job["error"]

            def failed_once() -> bool:
                items = _deliveries(client, job["id"])
                return bool(items) and items[0]["error"] is not None

            wait_for(failed_once, timeout=120, what="a failed MLflow attempt", interval=0.1)
            # when it comes back at the same address, a retry (1 s, 2 s, 4 s … later) logs the job.
            forwarder.open()

            def delivered() -> list[dict[str, Any]] | None:
                items = _deliveries(client, job["id"])
                return items if items[-1]["delivered_at"] else None

            items = wait_for(delivered, timeout=240, what="a delivered MLflow attempt", interval=0.2)
    finally:
        forwarder.close()
    *failed, done = items
    assert failed and all(f["error"] and f["delivered_at"] is None for f in failed)
    assert [i["attempt"] for i in items] == list(range(1, len(items) + 1))
    assert done["error"] is None and done["run_id"] is not None
    mlflow = mlflow_server.client()
    exp = mlflow.get_experiment_by_name(experiment)
    runs = mlflow.search_runs([exp.experiment_id], filter_string=f"tags.`nncompress.job_id` = '{job['id']}'")
    assert [r.info.run_id for r in runs] == [done["run_id"]]
    assert runs[0].data.metrics["after.params"] == job["metrics"]["after"]["params"]


@pytest.mark.service
def test_a_celery_worker_logs_its_jobs_with_artifacts_read_from_the_object_store(
    mlflow_server: MlflowServer,
    pg_url: str,
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    s3_bucket: S3Bucket,
    tmp_path: Path,
    make_api_key: Callable[..., str],
) -> None:
    # Given the distributed mode on the S3 store, with tracking set on the API and the worker alike,
    def settings(cache: str) -> Settings:
        return object_store_settings(
            pg_url,
            redis_server.url,
            s3_bucket.url,
            storage_dir=tmp_path / "unused-storage",
            cache_dir=tmp_path / cache,
            mlflow_tracking_uri=mlflow_server.url,
            mlflow_poll_seconds=0.2,
        )

    experiment = f"distributed-{uuid.uuid4().hex[:8]}"
    start_worker(settings("worker-cache"), name="w1", target=None)  # the real pipeline
    api = settings("api-cache")
    with TestClient(create_app(api)) as client:
        client.headers.update(bearer(make_api_key(api, "ci-pipeline")))
        body = {"model_id": uploaded_trained_mnist(client), "config_list": CONFIG, "options": QUICK}
        # when a worker runs a job,
        job = _finished(client, {**body, "mlflow": {"experiment": experiment}}, timeout=240)
        assert job["status"] == "succeeded", job["error"]

        def delivered() -> list[dict[str, Any]] | None:
            items = _deliveries(client, job["id"])
            return items if items and items[-1]["delivered_at"] else None

        # its run is logged by a worker (the API process runs no logger in this mode).
        (delivery,) = wait_for(delivered, timeout=240, what="the MLflow delivery", interval=0.2)
    mlflow = mlflow_server.client()
    run = mlflow.get_run(delivery["run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == delivery["experiment_id"]
    assert (
        run.data.tags["nncompress.tenant"] == "ci-pipeline"
        and run.data.tags["nncompress.job_id"] == job["id"]
    )
    for artifact in job["artifacts"]:
        local = mlflow.download_artifacts(run.info.run_id, f"model/{artifact['name']}", str(tmp_path))
        assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == artifact["sha256"], artifact["name"]
    assert not (tmp_path / "unused-storage" / "jobs").exists()
