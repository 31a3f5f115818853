"""The boto3 side of object storage: the bucket URL, the client, and how its failures surface."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core.errors import StorageUnavailable


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix/")`` (prefix "" when none).

    Raises:
        ValueError: ``url`` is not an ``s3://`` URL.
    """
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def make_client() -> Any:
    """A boto3 S3 client from the standard AWS_* environment.

    With a custom endpoint (MinIO, Ceph, R2, a test server) requests use path-style addressing:
    ``http://minio:9000/bucket/key`` resolves where ``http://bucket.minio:9000/key`` would not.
    """
    import boto3
    from botocore.config import Config

    custom = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    config = Config(
        # Throttling and 5xx are retried with backoff (3 attempts; AWS_MAX_ATTEMPTS changes it). An
        # endpoint that does not answer fails a readiness probe in seconds, not botocore's minute; an
        # answer may take long: completing a 1 GiB multipart upload took moto's server over 60 s here.
        retries={"mode": "standard"},
        connect_timeout=5,
        read_timeout=300,
        s3={"addressing_style": "path" if custom else "auto"},
        signature_version="s3v4",
    )
    return boto3.client("s3", config=config)


@contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Turns the store's failures (unreachable, refused, throttled) into ``StorageUnavailable`` (503)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable(f"object storage failed to {what}: {exc}") from exc


def is_missing(exc: Exception) -> bool:
    """Whether the store answered "no such object" (rather than failing)."""
    from botocore.exceptions import ClientError

    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
    return code in {"404", "NoSuchKey", "NotFound"}
