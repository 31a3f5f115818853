"""End to end through the HTTP API with the real dispatchers, workers and pipeline.

upload the seed's trained MNIST weights → submit the seed's job → poll → download the artifacts →
reload them without pickle → the smaller model classifies the shipped MNIST subset.
Once embedded (SQLite, threads in the API process) and once distributed (PostgreSQL, Redis, a
Celery worker process).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from core.settings import Settings
from tests.conftest import WebhookReceiver, bearer
from tests.workers.conftest import FAST, SEED_SPEC, RedisServer, WorkerProcess, wait_for

pytestmark = pytest.mark.slow


def _run_seed_job(client: TestClient, tmp_path: Path, webhook_url: str) -> dict[str, Any]:
    from nncompress.data import mnist_net_weights_path

    weights = mnist_net_weights_path()
    with weights.open("rb") as fh:
        response = client.post(
            "/v1/models",
            files={"file": ("mnist_net.safetensors", fh, "application/octet-stream")},
            data={"architecture": "mnist_net", "format": "safetensors"},
        )
    assert response.status_code == 201, response.text
    model_id = response.json()["id"]
    body = {
        "model_id": model_id,
        "pruner": SEED_SPEC["pruner"],
        "config_list": SEED_SPEC["config_list"],
        "options": {"latency_runs": 3},
        "webhook": {"url": webhook_url, "events": ["started", "succeeded"]},
    }
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    location = response.headers["Location"]
    deadline = time.monotonic() + 240
    seen_progress: list[float] = []
    while True:  # poll as a client would, with a deadline
        job = client.get(location).json()
        seen_progress.append(job["progress"])
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"job still {job['status']} at {job['progress']}%"
        time.sleep(0.2)
    assert job["status"] == "succeeded", job["error"]
    assert seen_progress == sorted(seen_progress) and seen_progress[-1] == 100.0
    events = client.get(f"{location}/events").json()["items"]
    stages = [e["stage"] for e in events if e["type"] == "stage"]
    assert stages[:3] == ["loading", "pruning", "speedup"] and events[-1]["type"] == "succeeded"
    out = tmp_path / "download"
    out.mkdir()
    for artifact in job["artifacts"]:
        data = client.get(artifact["url"]).content
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        (out / artifact["name"]).write_bytes(data)
    return {"job": job, "folder": out}


def _check_reloaded(folder: Path, job: dict[str, Any]) -> None:
    import torch

    from nncompress.data import load_mnist_subset
    from nncompress.io.artifacts import load_compressed

    model = load_compressed(folder)
    images, labels = load_mnist_subset(500)
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (500, 10)
    params = sum(p.numel() for p in model.parameters())
    assert params == job["metrics"]["after"]["params"] < job["metrics"]["before"]["params"]
    # Half the channels gone and no fine-tuning: the seed measured about 91% (98% before).
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    assert accuracy > 0.8


def _check_metrics(text: str) -> None:
    """Stage durations the worker recorded reach the API's /metrics, whichever process ran the job."""
    for stage in ("loading", "pruning", "speedup"):
        assert re.search(rf'nncompress_stage_duration_seconds_count\{{stage="{stage}"\}} [1-9]', text), stage
    assert re.search(r'nncompress_jobs\{status="succeeded"\} 1\.0', text)


def _check_webhooks(client: TestClient, job_id: str, receiver: WebhookReceiver) -> None:
    """The worker side's deliverer sent both subscribed messages (it runs beside the reconciler)."""

    def delivered() -> list[dict[str, Any]]:
        items = client.get(f"/v1/jobs/{job_id}/webhook-deliveries").json()["items"]
        return [d for d in items if d["delivered_at"] is not None]

    wait_for(lambda: len(delivered()) == 2, 30, "both webhook deliveries")
    assert sorted(d["event"] for d in delivered()) == ["started", "succeeded"]
    types = sorted(json.loads(body)["type"] for _, body in receiver.received)
    assert types == ["job.started", "job.succeeded"]


def test_embedded_service_end_to_end(tmp_path: Path, webhook_receiver: WebhookReceiver) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        storage_dir=tmp_path / "storage",
        webhook_allow_private=True,
        webhook_poll_seconds=0.2,
        **FAST,
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        outcome = _run_seed_job(client, tmp_path, webhook_receiver.url)
        _check_webhooks(client, outcome["job"]["id"], webhook_receiver)
        _check_metrics(client.get("/metrics").text)
    _check_reloaded(outcome["folder"], outcome["job"])


@pytest.mark.service
def test_distributed_service_end_to_end(
    pg_url: str,
    redis_server: RedisServer,
    start_worker: Any,
    tmp_path: Path,
    make_api_key: Callable[..., str],
    webhook_receiver: WebhookReceiver,
) -> None:
    settings = Settings(
        database_url=pg_url,
        broker_url=redis_server.url,
        storage_dir=tmp_path / "storage",
        webhook_allow_private=True,
        webhook_poll_seconds=0.2,
        **FAST,
    )
    worker: WorkerProcess = start_worker(settings, target=None)  # the real pipeline
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/jobs").status_code == 401  # distributed: a key on every request
        client.headers.update(bearer(make_api_key(settings, "ci-pipeline")))
        outcome = _run_seed_job(client, tmp_path, webhook_receiver.url)
        _check_webhooks(client, outcome["job"]["id"], webhook_receiver)
        metrics = client.get("/metrics").text
        _check_metrics(metrics)
        assert re.search(r'nncompress_worker_heartbeat_age_seconds\{worker="[^"]+"\} \d', metrics)
        assert re.search(r'nncompress_queue_depth\{queue="cpu"\} 0\.0', metrics)  # Redis LLEN
    _check_reloaded(outcome["folder"], outcome["job"])
    assert "started job process" in worker.log_text()
