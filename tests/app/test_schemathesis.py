"""schemathesis over the whole OpenAPI schema, every check, against the real app in distributed mode.

The app runs as it is deployed (PostgreSQL, Celery on Redis, API keys required) under a real
uvicorn; schemathesis runs as its CLI in a subprocess, with a fixed seed and a bounded number of
examples per operation, so a run is repeatable and its length does not grow with luck. Jobs it
submits are published to a Redis database no worker reads: the API is what is under test.

What the schema cannot say is declared in ``schemathesis.toml`` beside this file (upload contents
a multipart schema can only call "binary"), each with its reason.
"""

from __future__ import annotations

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
from app.settings import Settings
from tests.app.factories import mnist_safetensors
from tests.app.test_idempotency_concurrency import free_port

pytestmark = [pytest.mark.service, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 10  # per operation and phase; the coverage phase adds its deterministic cases
SEED = 20261205
BROKER_URL = "redis://127.0.0.1:6379/11"  # a database of its own: nothing consumes these jobs


@pytest.fixture
def served(pg_url: str, tmp_path: Path, make_api_key: Callable[..., str]) -> Iterator[tuple[str, str]]:
    """The app under uvicorn in distributed mode; yields (base URL, API key)."""
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
    _seed(base, key)
    yield base, key
    server.should_exit = True
    thread.join(timeout=30)


def _seed(base: str, key: str) -> None:
    # A model the tenant owns, so that generated requests reach more than the 404 of a missing id.
    import httpx

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        response = client.post(
            "/v1/models",
            files={"file": ("m.safetensors", mnist_safetensors())},
            data={"architecture": "mnist_net"},
        )
        assert response.status_code == 201, response.text


def run_schemathesis(base: str, key: str, report: Path) -> subprocess.CompletedProcess[str]:
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
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)


def test_schemathesis_finds_nothing(served: tuple[str, str], tmp_path: Path) -> None:
    base, key = served
    result = run_schemathesis(base, key, tmp_path / "junit.xml")
    output = result.stdout + result.stderr
    print(output[-20000:])
    assert result.returncode == 0, output[-20000:]
    cases = _case_count(output)
    assert cases > 0, output[-2000:]


def _case_count(output: str) -> int:
    found: Any = re.search(r"(\d+) generated", output)
    return int(found.group(1)) if found else 0
