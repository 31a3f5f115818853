"""The whole job flow on object storage, distributed: upload → job → download, PostgreSQL + Redis, two
Celery worker processes with a cache folder each, an S3-protocol server (moto's) as the only store.

Nothing may land in the local storage folder the API and workers would otherwise share: the
workers fetch the model from the store into their own caches and publish the artifacts to it, and
the API streams them back, or hands out a presigned URL that returns the same bytes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from core.settings import Settings
from tests.conftest import bearer
from tests.s3_server import S3Bucket
from tests.workers.conftest import SEED_SPEC, RedisServer, WorkerProcess, object_store_settings

pytestmark = pytest.mark.slow


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _run_job(client: TestClient, model_id: str) -> dict[str, Any]:
    body = {
        "model_id": model_id,
        "pruner": SEED_SPEC["pruner"],
        "config_list": SEED_SPEC["config_list"],
        "options": {"latency_runs": 3},
    }
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    location = response.headers["Location"]
    deadline = time.monotonic() + 240
    while True:  # poll as a client would, with a deadline
        job: dict[str, Any] = client.get(location).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"job still {job['status']} at {job['progress']}%"
        time.sleep(0.2)
    assert job["status"] == "succeeded", job["error"]
    claimed = [e for e in client.get(f"{location}/events").json()["items"] if e["type"] == "claimed"]
    job["worker"] = claimed[-1]["data"]["worker"]
    return job


def _download_all(client: TestClient, job: dict[str, Any], bucket: S3Bucket) -> None:
    for artifact in job["artifacts"]:
        data = client.get(artifact["url"]).content
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        assert bucket.get(f"jobs/{job['id']}/{artifact['name']}") == data


@pytest.mark.service
def test_distributed_job_flow_on_s3_writes_nothing_to_the_storage_folder(
    pg_url: str,
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    s3_bucket: S3Bucket,
    tmp_path: Path,
    make_api_key: Callable[..., str],
) -> None:
    shared = tmp_path / "shared-storage"  # what API and workers would share without object storage

    def settings(cache: str, **extra: Any) -> Settings:
        return object_store_settings(
            pg_url,
            redis_server.url,
            s3_bucket.url,
            storage_dir=shared,
            cache_dir=tmp_path / cache,
            s3_part_bytes=5 << 20,
            **extra,
        )

    from nncompress.data import mnist_net_weights_path

    weights = mnist_net_weights_path().read_bytes()
    api = settings("api-cache")
    first = start_worker(settings("worker1-cache"), name="w1", target=None)  # the real pipeline
    with TestClient(create_app(api)) as client:
        key = make_api_key(api, "ci-pipeline")
        client.headers.update(bearer(key))
        response = client.post(
            "/v1/models",
            files={"file": ("mnist_net.safetensors", weights, "application/octet-stream")},
            data={"architecture": "mnist_net", "format": "safetensors"},
        )
        assert response.status_code == 201, response.text
        model_id = response.json()["id"]
        assert s3_bucket.get(f"models/{model_id}/upload.bin") == weights

        job1 = _run_job(client, model_id)
        # The second job is the second worker's: the first is gone, and the second starts cold.
        first.stop()
        start_worker(settings("worker2-cache"), name="w2", target=None)
        job2 = _run_job(client, model_id)
        assert job1["worker"] != job2["worker"]
        for job in (job1, job2):
            _download_all(client, job, s3_bucket)

    with TestClient(create_app(settings("api2-cache", download_redirect_seconds=60))) as presigning:
        presigning.headers.update(bearer(key))
        artifact = job1["artifacts"][0]
        response = presigning.get(artifact["url"], follow_redirects=False)
        assert response.status_code == 307
        assert response.headers["etag"] == f'"{artifact["sha256"]}"'
        fetched = httpx.get(response.headers["location"])
        assert fetched.status_code == 200
        assert hashlib.sha256(fetched.content).hexdigest() == artifact["sha256"]

    assert _files(shared) == []
    for cache in ("worker1-cache", "worker2-cache"):
        root = tmp_path / cache
        # Each worker fetched the model from the store into its own cache, and kept no job folder.
        assert (root / f"models/{model_id}/upload.bin").read_bytes() == weights
        assert _files(root / "work") == [] and _files(root / "tmp") == []
    keys = s3_bucket.keys()
    for job in (job1, job2):
        assert {a["name"] for a in job["artifacts"]} == {
            k.split("/", 2)[2] for k in keys if k.startswith(f"jobs/{job['id']}/")
        }
    assert not [k for k in keys if k.startswith("tmp/")] and s3_bucket.multipart_uploads() == []
