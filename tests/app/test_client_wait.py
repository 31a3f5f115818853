"""`Client.wait` (and so `nncompress submit --wait`) follows the live event stream of a real server."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from app.main import create_app
from nncompress.client import Client
from tests.app.factories import CONV_HALF, mnist_safetensors
from tests.conftest import RecordingDispatcher
from tests.live_server import serve_asgi
from workers import state


def without_stream(app: FastAPI) -> Any:
    """The app as a server without the event stream answers: 404 on .../events/stream."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/events/stream"):
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)

    return asgi


@pytest.fixture
def serve(make_settings: Any) -> Iterator[Callable[..., tuple[Client, FastAPI]]]:
    with contextlib.ExitStack() as stack:

        def start(drop_stream: bool = False) -> tuple[Client, FastAPI]:
            app = create_app(make_settings(), dispatcher=RecordingDispatcher())
            url = stack.enter_context(serve_asgi(without_stream(app) if drop_stream else app))
            client = Client(url, timeout=10)
            stack.callback(client.close)
            return client, app

        yield start


def submit(client: Client, tmp_path: Path) -> str:
    weights = tmp_path / "mnist.safetensors"
    weights.write_bytes(mnist_safetensors())
    model = client.upload_model(weights, architecture="mnist_net")
    return str(client.create_job(model["id"], CONV_HALF)["id"])


def run_quickly(app: FastAPI, job_id: str, after: float = 0.3) -> threading.Thread:
    """A worker's transitions, back to back: a poller would miss the short stages."""

    def work() -> None:
        time.sleep(after)
        with app.state.session_factory() as session:
            state.claim(session, job_id, "w1", 30)
            for stage, pct in (("loading", 5), ("pruning", 20), ("speedup", 60), ("exporting", 90)):
                state.set_progress(session, job_id, "w1", stage=stage, percent=pct)
            state.finish_succeeded(session, job_id, "w1", metrics=None, result=None, artifacts=[])

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def job_gets(app: FastAPI, at_least: int) -> float:
    """GET /v1/jobs/{id} requests the server counted (counted just after the response: poll a moment)."""

    def count() -> float:
        sample = app.state.metrics.registry.get_sample_value(
            "nncompress_http_requests_total", {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "200"}
        )
        return float(sample or 0.0)

    deadline = time.monotonic() + 5
    while count() < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    return count()


def test_wait_follows_the_stream_and_sees_every_stage(
    serve: Callable[..., tuple[Client, FastAPI]], tmp_path: Path
) -> None:
    client, app = serve()
    job_id = submit(client, tmp_path)
    seen: list[tuple[str, str | None]] = []
    worker = run_quickly(app, job_id)
    job = client.wait(job_id, on_progress=lambda j: seen.append((j["status"], j["stage"])), deadline=30)
    worker.join()
    assert job["status"] == "succeeded"
    stages = [stage for _, stage in seen]
    assert [s for s in stages if s not in (None,)][:4] == ["loading", "pruning", "speedup", "exporting"]
    assert job_gets(app, at_least=1) == 1  # the final read only: no polling


def test_wait_polls_a_server_without_the_stream(
    serve: Callable[..., tuple[Client, FastAPI]], tmp_path: Path
) -> None:
    client, app = serve(drop_stream=True)
    job_id = submit(client, tmp_path)
    worker = run_quickly(app, job_id, after=1.0)  # the job is seen queued at least once
    job = client.wait(job_id, poll_interval=0.1, deadline=30)
    worker.join()
    assert job["status"] == "succeeded"
    assert job_gets(app, at_least=2) >= 2  # polled


def test_wait_on_the_stream_honours_its_deadline(
    serve: Callable[..., tuple[Client, FastAPI]], tmp_path: Path
) -> None:
    from nncompress.client import WaitTimeout

    client, _ = serve()
    job_id = submit(client, tmp_path)  # stays queued: nobody runs it
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        client.wait(job_id, deadline=1.0)
    assert time.monotonic() - started < 5
