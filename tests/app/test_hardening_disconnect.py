"""A client that disconnects mid-upload is a 499 "client closed request": logged as a warning, counted
as status="499" in /metrics, its partial file removed; not an ERROR and a 500."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.app.factories import mnist_safetensors

BOUNDARY = "hardeningboundary"


def _half_a_multipart_upload() -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="architecture"\r\n\r\nmnist_net\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="m.safetensors"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + mnist_safetensors()[:4096]


def _upload_then_disconnect(app: Any) -> list[dict[str, Any]]:
    """Drives the ASGI app like a server whose client hangs up after sending part of the body."""
    body = _half_a_multipart_upload()
    messages = [
        {"type": "http.request", "body": body[:2000], "more_body": True},
        {"type": "http.request", "body": body[2000:], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/models",
        "raw_path": b"/v1/models",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"content-length", str(len(body) + 100_000).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_disconnect_mid_upload_is_a_499_warning(
    make_client: Callable[..., Any], make_settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(make_settings(storage_dir=tmp_path / "storage"))
    with caplog.at_level(logging.INFO):
        sent = _upload_then_disconnect(client.app)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [499]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert any(r.levelno == logging.WARNING and "disconnected" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "storage" / "tmp").glob("*.part")) == []
    metrics = client.get("/metrics").text
    lines = [line for line in metrics.splitlines() if line.startswith("nncompress_http_requests_total")]
    uploads = [line for line in lines if 'route="/v1/models"' in line and 'method="POST"' in line]
    assert any('status="499"' in line and line.endswith(" 1.0") for line in uploads), uploads
    assert not any('status="500"' in line for line in uploads), uploads
