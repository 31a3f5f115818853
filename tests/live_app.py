"""The real app (embedded, SQLite, API keys required) in uvicorn on a real socket, with a TCP proxy in
front of it, for tests of what talks to it over HTTP: the client and the client commands.

No worker runs: tests move jobs through their states with the workers' own state functions
(:func:`run_to`, :func:`succeed`), or record a finished job with its files (:func:`finished`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from app.main import create_app
from nncompress.client import Client
from tests.app.factories import finished_job, mnist_safetensors
from tests.conftest import RecordingDispatcher
from tests.live_server import TcpProxy, serve_asgi
from workers import state


class Dispatcher(RecordingDispatcher):
    """Records enqueued ids and lets a test wait for the next one (a job submitted by the CLI)."""

    def __init__(self) -> None:
        super().__init__()
        self._enqueued = threading.Condition()

    def enqueue(self, job_id: str, queue: str | None = None) -> None:
        with self._enqueued:
            super().enqueue(job_id, queue)
            self._enqueued.notify_all()

    def wait_for_job(self, timeout: float = 60) -> str:
        with self._enqueued:
            assert self._enqueued.wait_for(lambda: self.enqueued, timeout), "no job was submitted"
            return self.enqueued[-1]


@dataclass
class Live:
    """The app as served: ``url`` directly, ``proxy`` in front of it; ``key`` is a valid API key."""

    app: FastAPI
    url: str
    key: str
    proxy: TcpProxy
    dispatcher: Dispatcher

    clients: list[Client] = field(default_factory=list)  # closed when the app stops

    def client(self, *, via_proxy: bool = False, **kwargs: Any) -> Client:
        client = Client(self.proxy.url if via_proxy else self.url, api_key=self.key, timeout=10, **kwargs)
        self.clients.append(client)
        return client

    def session(self) -> Any:
        return self.app.state.session_factory()


@contextlib.contextmanager
def live_apps(
    make_settings: Callable[..., Any], make_api_key: Callable[..., str]
) -> Iterator[Callable[..., Live]]:
    """Yields ``start(wrap=None, **settings) -> Live``; every app started is stopped at the end.

    ``wrap`` puts an ASGI layer in front of the app; ``settings`` override the test's settings. Test
    modules make it a fixture (taking the ``make_settings`` and ``make_api_key`` fixtures).
    """
    with contextlib.ExitStack() as stack:

        def start(wrap: Callable[[Any], Any] | None = None, **settings: Any) -> Live:
            built = make_settings(require_api_keys=True, **settings)
            dispatcher = Dispatcher()
            app = create_app(built, dispatcher=dispatcher)
            url = stack.enter_context(serve_asgi(wrap(app) if wrap else app))
            proxy = TcpProxy(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            stack.callback(proxy.close)
            live = Live(app, url, make_api_key(built), proxy, dispatcher)
            stack.callback(lambda: [client.close() for client in live.clients])
            return live

        yield start


def upload_mnist(client: Client, tmp_path: Path, name: str = "mnist.safetensors") -> dict[str, Any]:
    weights = tmp_path / name
    weights.write_bytes(mnist_safetensors())
    return client.upload_model(weights, architecture="mnist_net")


def finished(live: Live, model_id: str, files: dict[str, bytes]) -> str:
    """A succeeded job listing ``files`` as its artifacts, as a worker leaves it."""
    with live.session() as session:
        job = finished_job(
            session,
            live.app.state.storage,
            model_id,
            {name: (data, "application/octet-stream") for name, data in files.items()},
        )
        return str(job.id)


def run_to(live: Live, job_id: str, *steps: tuple[str, float]) -> None:
    """Claims the job and walks it through ``(stage, percent)`` steps, as a worker would."""
    with live.session() as session:
        assert state.claim(session, job_id, "w1", 30) is not None
        for stage, percent in steps:
            state.set_progress(session, job_id, "w1", stage=stage, percent=percent)


def succeed(live: Live, job_id: str, metrics: dict[str, Any] | None = None) -> None:
    with live.session() as session:
        state.finish_succeeded(session, job_id, "w1", metrics=metrics, result=None, artifacts=[])
