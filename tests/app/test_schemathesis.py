"""schemathesis over the whole OpenAPI schema, every check, against the real app in distributed mode.

The app runs as it is deployed (PostgreSQL, Celery on Redis, API keys required) under a real
uvicorn; schemathesis runs as its CLI in a subprocess, with a fixed seed and a bounded number of
examples per operation, so a run is repeatable and its length does not grow with luck. Jobs it
submits are published to a Redis database no worker reads: the API is what is under test.

What the schema cannot say is declared in ``schemathesis.toml`` beside this file (upload contents
a multipart schema can only call "binary"), each with its reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from app.main import create_app
from core.settings import Settings
from tests.app.dataset_files import mnist_arrays, npz_bytes
from tests.app.factories import finished_job, job_body, mnist_safetensors
from tests.app.test_idempotency_concurrency import free_port

pytestmark = [pytest.mark.service, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 10  # per operation and phase; the coverage phase adds its deterministic cases
SEED = 20261205
BROKER_URL = "redis://127.0.0.1:6379/11"  # a database of its own: nothing consumes these jobs


@pytest.fixture
def served(
    pg_url: str, tmp_path: Path, make_api_key: Callable[..., str]
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """The app under uvicorn in distributed mode; yields (base URL, API key, seeded ids)."""
    settings = Settings(
        database_url=pg_url,
        broker_url=BROKER_URL,
        storage_dir=tmp_path / "storage",
        require_api_keys=True,
    )
    # Limits high enough that schemathesis's volume is not itself refused (429 is not what it tests).
    key = make_api_key(settings, requests_per_minute=10**6, max_concurrent_jobs=10**6)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    yield base, key, _seed(base, key, app)
    server.should_exit = True
    thread.join(timeout=30)


def _seed(base: str, key: str, app: Any) -> dict[str, str]:
    """Rows the tenant owns, so that operations on ids reach their logic, not only the 404 of a
    made-up id: a model, a data set, a queued job and a finished job with an artifact. Their ids go
    to schemathesis through the environment (``schemathesis.toml`` names them)."""
    import httpx

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        model = client.post(
            "/v1/models",
            files={"file": ("m.safetensors", mnist_safetensors())},
            data={"architecture": "mnist_net"},
        )
        assert model.status_code == 201, model.text
        x, y = mnist_arrays(32)
        dataset = client.post("/v1/datasets", files={"file": ("mnist.npz", npz_bytes(x=x, y=y))})
        assert dataset.status_code == 201, dataset.text
        job = client.post("/v1/jobs", json=job_body(model.json()["id"]))
        assert job.status_code == 202, job.text
    with app.state.session_factory() as session:
        report = b'{"parameters": {"before": 431080}}'
        done = finished_job(
            session, app.state.storage, model.json()["id"], {"report.json": (report, "application/json")}
        )
    return {
        "NNCOMPRESS_ST_MODEL_ID": model.json()["id"],
        "NNCOMPRESS_ST_DATASET_ID": dataset.json()["id"],
        "NNCOMPRESS_ST_JOB_ID": job.json()["id"],
        "NNCOMPRESS_ST_FINISHED_JOB_ID": done.id,
    }


def run_schemathesis(
    base: str, key: str, ids: dict[str, str], report: Path
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--header",
        f"Authorization: Bearer {key}",
        "--workers",
        "1",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    env = {**os.environ, **ids}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


# Over a thousand requests, some of them uploads: minutes on a loaded 2-core machine.
@pytest.mark.timeout(1800)
def test_schemathesis_finds_nothing(served: tuple[str, str, dict[str, str]], tmp_path: Path) -> None:
    base, key, ids = served
    result = run_schemathesis(base, key, ids, tmp_path / "junit.xml")
    output = result.stdout + result.stderr
    print(output[-20000:])
    assert result.returncode == 0, output[-20000:]
    # The whole schema, and every case passed (the run's own summary says so).
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    assert selected is not None and selected.group(1) == selected.group(2), output[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts is not None and counts.group(1) == counts.group(2) != "0", output[-2000:]
