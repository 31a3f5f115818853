"""Slow and greedy uploads against a real uvicorn server, driven over raw sockets so the test sets
the byte rate: a body too slow is cut (408, temp file removed, counted), a tenant's uploads at once
are capped (429), an over-limit body closes the connection instead of being read to its end, and
/readyz answers while many slow uploads are open.

No wait here proves anything by its length: each is an upper bound derived from the setting under
test (``patience``), and the assertions are on what the server answered and did.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.app.factories import mnist_safetensors
from tests.conftest import RecordingDispatcher

BOUNDARY = "uploadpacing"
PROBLEM = "urn:nncompress:problem:"


def patience(seconds: float) -> float:
    """A generous upper bound for something the server should do after ``seconds`` (a setting)."""
    return 20 * seconds + 30


def wait_until(condition: Callable[[], bool], bound: float, what: str) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {bound:.0f} s"
        time.sleep(0.02)


@dataclass
class Served:
    port: int
    storage: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> float:
        """A sample of /metrics, 0 when absent."""
        text = httpx.get(f"{self.base}/metrics", timeout=patience(1)).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def requests(self, status: int) -> float:
        return self.metric(
            "nncompress_http_requests_total", method="POST", route="/v1/models", status=str(status)
        )

    def parts(self) -> list[Path]:
        return list((self.storage / "tmp").glob("*.part"))


@pytest.fixture
def serve(make_settings: Callable[..., Any], tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Starts the app on a real uvicorn server (its own thread and event loop, a free port)."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(http: str = "auto", **overrides: Any) -> Served:
        settings = make_settings(**overrides)
        app = create_app(settings, dispatcher=RecordingDispatcher())
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", http=http)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until(lambda: server.started or not thread.is_alive(), patience(1), "uvicorn's start")
        assert server.started, "uvicorn did not start"
        servers.append((server, thread))
        port = server.servers[0].sockets[0].getsockname()[1]
        return Served(port=port, storage=settings.storage_dir)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(patience(1))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == "application/problem+json", self.headers
        document: dict[str, Any] = json.loads(self.body)
        return document


class RawRequest:
    """An HTTP/1.1 request over a raw socket: ``head`` is sent at once, the body as the test says."""

    def __init__(self, port: int, *, timeout: float, head: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(head)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        """One chunk of a chunked body."""
        self.sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def finish(self) -> None:
        self.sock.sendall(b"0\r\n\r\n")

    def response(self) -> Reply:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Reply(int(status_line.split()[1]), headers, body)

    def closed_by_server(self) -> bool:
        """True when the server has closed the connection (EOF or reset); waits up to the timeout."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def _read(self) -> None:
        data = self.sock.recv(65536)
        assert data, f"the server closed the connection mid-response: {self.buffer!r}"
        self.buffer += data


def open_upload(port: int, *, timeout: float, path: str = "/v1/models") -> RawRequest:
    """``POST /v1/models`` (or ``path``) whose multipart body goes in chunks (``send``)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    )
    return RawRequest(port, timeout=timeout, head=head.encode())


def form_head() -> bytes:
    """The architecture field and the headers of the file part: the server opens its temp file."""
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="architecture"\r\n\r\nmnist_net\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="m.safetensors"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def form_tail() -> bytes:
    return f"\r\n--{BOUNDARY}--\r\n".encode()


def full_upload(port: int) -> Reply:
    upload = open_upload(port, timeout=patience(1))
    upload.send(form_head() + mnist_safetensors() + form_tail())
    upload.finish()
    reply = upload.response()
    upload.close()
    return reply


def test_an_upload_that_stops_sending_is_cut_with_a_408(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    idle = 1.0
    server = serve(upload_idle_seconds=idle, upload_min_rate=0)
    upload = open_upload(server.port, timeout=patience(idle))
    upload.send(form_head() + mnist_safetensors()[:100])  # then nothing more
    with caplog.at_level(logging.INFO):
        reply = upload.response()
        assert upload.closed_by_server()
    assert reply.status == 408
    problem = reply.problem()
    assert problem["type"] == PROBLEM + "body_timeout"
    assert "NNCOMPRESS_UPLOAD_IDLE_SECONDS" in problem["detail"]
    # The file part had begun (so a temp file existed) when the body stopped.
    received = int(re.search(r"after (\d+) bytes", problem["detail"]).group(1))  # type: ignore[union-attr]
    assert received >= len(form_head())
    assert reply.headers.get("connection") == "close"
    wait_until(lambda: not server.parts(), patience(idle), "the temp file's removal")
    wait_until(lambda: server.requests(408) == 1, patience(idle), "the 408 being counted")
    assert server.requests(500) == 0
    assert server.metric("nncompress_request_bodies_cut_total", reason="idle") == 1
    assert server.metric("nncompress_uploads_in_progress") == 0
    assert any(r.levelno == logging.WARNING and "too slow" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_an_upload_trickling_below_the_minimum_rate_is_cut_with_a_408(serve: Callable[..., Served]) -> None:
    # A byte every 50 ms keeps the (long) idle rule quiet: only the rate rule can cut this body.
    grace, idle = 1.0, 120.0
    server = serve(upload_min_rate=2000, upload_grace_seconds=grace, upload_idle_seconds=idle)
    upload = open_upload(server.port, timeout=patience(grace))
    upload.send(form_head())
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.05):
            try:
                upload.send(b"x")
            except OSError:  # the server closed the connection
                return

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        reply = upload.response()
    finally:
        stop.set()
        trickler.join()
    assert reply.status == 408
    problem = reply.problem()
    assert problem["type"] == PROBLEM + "body_timeout"
    assert "NNCOMPRESS_UPLOAD_MIN_RATE" in problem["detail"]
    assert upload.closed_by_server()
    wait_until(lambda: not server.parts(), patience(grace), "the temp file's removal")
    assert server.metric("nncompress_request_bodies_cut_total", reason="rate") == 1
    assert server.metric("nncompress_request_bodies_cut_total", reason="idle") == 0


def test_a_stalled_json_body_is_a_408_too_not_a_400(serve: Callable[..., Served]) -> None:
    # FastAPI answers 400 for most errors raised while it reads a JSON body: the pace must survive that.
    idle = 1.0
    server = serve(upload_idle_seconds=idle, upload_min_rate=0)
    body = b'{"model_id": "m", "config_list": []}'
    head = (
        "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    request = RawRequest(server.port, timeout=patience(idle), head=head.encode())
    request.sock.sendall(body[:10])  # and then nothing
    reply = request.response()
    assert reply.status == 408
    assert reply.problem()["type"] == PROBLEM + "body_timeout"
    assert reply.headers.get("connection") == "close"
    assert request.closed_by_server()


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_an_over_limit_chunked_upload_gets_413_and_the_server_stops_reading(
    serve: Callable[..., Served], http: str
) -> None:
    server = serve(http=http, max_upload_bytes=4096)
    upload = open_upload(server.port, timeout=patience(1))
    upload.send(form_head() + b"x" * 8192)  # one write: the server reads it all before it answers
    reply = upload.response()
    assert reply.status == 413
    assert reply.problem()["type"] == PROBLEM + "upload_too_large"
    assert reply.headers.get("connection") == "close"
    # A server that went on reading would take all of this; one that closed refuses it at once.
    sent, more = 0, b"x" * 65536
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        while sent < 64 * 1024 * 1024:
            upload.send(more)
            sent += len(more)
    assert sent < 16 * 1024 * 1024, f"the server read {sent} bytes after its 413"
    wait_until(lambda: not server.parts(), patience(1), "the temp file's removal")


def test_a_tenant_over_its_concurrent_uploads_gets_429_until_one_ends(serve: Callable[..., Served]) -> None:
    server = serve(tenant_max_concurrent_uploads=2, upload_min_rate=0, upload_idle_seconds=600)
    weights = mnist_safetensors()
    first, second = (open_upload(server.port, timeout=patience(1)) for _ in range(2))
    for upload in (first, second):
        upload.send(form_head() + weights[:1000])
    wait_until(lambda: server.metric("nncompress_uploads_in_progress") == 2, patience(1), "two uploads")

    third = open_upload(server.port, timeout=patience(1))
    third.send(form_head())
    refused = third.response()
    assert refused.status == 429
    assert refused.problem()["type"] == PROBLEM + "too_many_uploads"
    assert int(refused.headers["retry-after"]) > 0
    assert refused.headers.get("connection") == "close"
    assert third.closed_by_server()
    # One cap for both upload routes.
    dataset = open_upload(server.port, timeout=patience(1), path="/v1/datasets")
    dataset.send(form_head())
    assert dataset.response().status == 429

    first.send(weights[1000:] + form_tail())
    first.finish()
    assert first.response().status == 201
    # Its slot came back before its 201 went out: the next upload is accepted at once.
    assert full_upload(server.port).status == 201

    second.close()  # a client that hangs up gives its slot back too
    wait_until(lambda: server.metric("nncompress_uploads_in_progress") == 0, patience(1), "the hang-up")
    assert full_upload(server.port).status == 201
    assert server.metric("nncompress_uploads_refused_total") == 2


def test_readyz_answers_while_many_slow_uploads_are_open(serve: Callable[..., Served]) -> None:
    cap, attempts = 8, 48
    server = serve(tenant_max_concurrent_uploads=cap, upload_min_rate=0, upload_idle_seconds=600)
    uploads = [open_upload(server.port, timeout=patience(1)) for _ in range(attempts)]
    try:
        for upload in uploads:
            upload.send(form_head() + b"x" * 10)  # and then nothing
        wait_until(
            lambda: server.metric("nncompress_uploads_refused_total") == attempts - cap,
            patience(1),
            "the refusals of the uploads over the cap",
        )
        assert server.metric("nncompress_uploads_in_progress") == cap
        # The held ones open their temp file as they parse what was sent; the refused ones never do.
        wait_until(lambda: len(server.parts()) == cap, patience(1), f"{cap} temp files")
        ready = httpx.get(f"{server.base}/readyz", timeout=patience(1))
        assert ready.status_code == 200, ready.text
    finally:
        for upload in uploads:
            upload.close()
    wait_until(lambda: server.metric("nncompress_uploads_in_progress") == 0, patience(1), "the hang-ups")
    wait_until(lambda: not server.parts(), patience(1), "the temp files' removal")
