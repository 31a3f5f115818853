"""20 identical POSTs at once with one Idempotency-Key create one job, against a real uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from app.main import create_app
from core.db.models import Job, JobEvent
from tests.app.factories import job_body, mnist_safetensors
from tests.conftest import RecordingDispatcher


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(make_settings: Any, db_url: str) -> Iterator[tuple[str, Any]]:
    """A real uvicorn server in a thread (its own event loop and thread pool); yields (base URL, app)."""
    app = create_app(make_settings(database_url=db_url), dispatcher=RecordingDispatcher())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(timeout=20)


def test_twenty_parallel_identical_posts_make_one_job(server: tuple[str, Any]) -> None:
    base, app = server
    with httpx.Client(base_url=base, timeout=60) as client:
        files = {"file": ("m.safetensors", mnist_safetensors())}
        model_id = client.post("/v1/models", files=files, data={"architecture": "mnist_net"}).json()["id"]
    body = job_body(model_id)
    barrier = threading.Barrier(20)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=60) as client:
            barrier.wait()
            return client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "same-key"})

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(post, range(20)))
    assert [r.status_code for r in responses] == [202] * 20, [
        r.text for r in responses if r.status_code != 202
    ]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") != "true" for r in responses) == 1
    with app.state.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1
        assert session.scalar(select(func.count()).select_from(JobEvent)) == 1
    assert app.state.dispatcher.enqueued == [responses[0].json()["id"]]
