"""A real S3-protocol server for the object-storage tests: moto's standalone server on 127.0.0.1.

It runs as a process of its own (``python -m moto.server``) on a free port, once per test session;
each test gets a fresh bucket and the standard ``AWS_*`` variables pointing at the server, which
worker processes started by the test inherit.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    proc: subprocess.Popen[bytes]
    endpoint: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )


@dataclass
class S3Bucket:
    """A bucket of its own for one test; ``url`` is what ``NNCOMPRESS_STORAGE_URL`` is set to."""

    server: S3Server
    name: str
    prefix: str = "nncompress"

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def keys(self) -> list[str]:
        """Every object key in the bucket, without the storage prefix."""
        found: list[str] = []
        pages = self.server.client().get_paginator("list_objects_v2").paginate(Bucket=self.name)
        for page in pages:
            found += [obj["Key"].removeprefix(f"{self.prefix}/") for obj in page.get("Contents", [])]
        return sorted(found)

    def get(self, key: str) -> bytes:
        answer = self.server.client().get_object(Bucket=self.name, Key=f"{self.prefix}/{key}")
        return bytes(answer["Body"].read())

    def multipart_uploads(self) -> list[dict[str, Any]]:
        answer = self.server.client().list_multipart_uploads(Bucket=self.name)
        return list(answer.get("Uploads", []))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = S3Server(proc, f"http://127.0.0.1:{port}")
    client = server.client()
    deadline = time.monotonic() + 60
    while True:  # poll until the server answers S3 requests
        try:
            client.list_buckets()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto's S3 server did not start on port {port}")
            time.sleep(0.2)
    yield server
    proc.kill()
    proc.wait()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A new bucket, with ``AWS_*`` set for boto3 in this process and in the processes it starts."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    name = f"nnc-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return S3Bucket(s3_server, name)
