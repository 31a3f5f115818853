"""Uploads into the bucket: a multipart upload fed while the request streams, and the sweep of the
ones a killed process left.

Parts go to a staging key under ``<prefix>tmp/`` (the object's key is known only once intake accepted
the file); the staging key starts with the upload's start time, which the sweep reads back.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from core.storage import TempWrite
from core.storage_s3.client import s3_errors

log = logging.getLogger(__name__)

# Parts uploaded or queued while the next one fills: with 8 MiB parts an upload holds about 24 MiB.
PARTS_IN_FLIGHT = 2
# A multipart upload or staging object is swept only when nothing touched it this long before the
# sweeping process started: another API replica may be streaming into it right now.
STALE_UPLOAD_SECONDS = 3600.0


def staging_key(prefix: str, name: str) -> str:
    """The key an upload's parts go to, ``<prefix>tmp/<start time>-<name>``.

    The start time is in the name because stores differ in what they report as an upload's start.
    """
    return f"{prefix}tmp/{int(time.time())}-{name}"


@dataclass
class S3TempWrite(TempWrite):
    """An upload written to a local scratch file and, part by part, to a multipart upload.

    The multipart upload starts with the first full part; a file smaller than one part is sent
    whole by :meth:`finish`. Parts go out on a thread of the upload's own, so the request's event
    loop only waits (in :meth:`drain`, off the loop) when :data:`PARTS_IN_FLIGHT` are pending.
    """

    client: Any = None
    bucket: str = ""
    staging_key: str = ""
    part_bytes: int = 8 << 20
    upload_id: str | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _futures: list[Future[dict[str, Any]]] = field(default_factory=list)
    _pool: ThreadPoolExecutor | None = None
    _done: bool = False

    def write(self, chunk: bytes) -> None:
        super().write(chunk)
        self._buffer += chunk
        if len(self._buffer) >= self.part_bytes:
            self._send_part()
            if self._in_flight() > PARTS_IN_FLIGHT:  # a caller that never drains still stays bounded
                self.drain()

    def _in_flight(self) -> int:
        return sum(not f.done() for f in self._futures)

    def _send_part(self) -> None:
        if self.upload_id is None:
            with s3_errors("start a multipart upload"):
                created = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.staging_key)
            self.upload_id = created["UploadId"]
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-part")
        assert self._pool is not None
        body, self._buffer = bytes(self._buffer), bytearray()
        self._futures.append(self._pool.submit(self._upload_part, len(self._futures) + 1, body))

    def _upload_part(self, number: int, body: bytes) -> dict[str, Any]:
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.staging_key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    @property
    def backlog(self) -> bool:
        return self._in_flight() >= PARTS_IN_FLIGHT

    def drain(self) -> None:
        """Waits until fewer than :data:`PARTS_IN_FLIGHT` parts are pending; raises a part's failure."""
        with s3_errors("store an upload part"):
            for future in self._futures:
                if self._in_flight() < PARTS_IN_FLIGHT:
                    break
                future.result()

    def close(self) -> None:
        """Sends the last part and waits for all (a file below one part waits for :meth:`finish`)."""
        if not self._file.closed:
            self._file.close()  # a scratch copy: no fsync, the store holds the durable one
        if self.upload_id is not None and self._buffer:
            self._send_part()
        with s3_errors("store an upload part"):
            for future in self._futures:
                future.result()

    def finish(self, key: str) -> None:
        """Stores the upload as ``key``: completes and copies the parts, or puts a small file whole."""
        self.close()
        if self.upload_id is None:
            with s3_errors("store an upload"), self.path.open("rb") as fh:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=fh)
            self._done = True
            return
        parts = [f.result() for f in self._futures]
        with s3_errors("complete a multipart upload"):
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.staging_key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": parts},
            )
            self._done = True
            # A server-side copy (multipart above 8 MiB, by s3transfer); no byte passes through here.
            self.client.copy({"Bucket": self.bucket, "Key": self.staging_key}, self.bucket, key)
            self.client.delete_object(Bucket=self.bucket, Key=self.staging_key)
        self._shutdown()

    def discard(self) -> None:
        """Aborts the multipart upload (or deletes the staging object) and the scratch file (idempotent)."""
        for future in self._futures:
            future.cancel()
        self._shutdown()
        try:
            if self.upload_id is not None and not self._done:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.staging_key, UploadId=self.upload_id
                )
            elif self.upload_id is not None:
                self.client.delete_object(Bucket=self.bucket, Key=self.staging_key)
        except Exception:
            # The sweep of a later start aborts what is left; the caller's own error matters more.
            log.warning("could not abort upload %s of %s", self.upload_id, self.staging_key, exc_info=True)
        self.upload_id = None
        super().discard()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def sweep_stale_uploads(client: Any, bucket: str, prefix: str, cutoff: float) -> int:
    """Aborts multipart uploads and deletes staging objects under ``<prefix>tmp/`` that nothing
    touched since ``cutoff`` (a Unix time); returns how many.

    Args:
        client: the boto3 S3 client.
        bucket: the bucket to sweep.
        prefix: the storage's key prefix ("" or ending in "/").
        cutoff: uploads whose start and last part are older than this are abandoned.
    """
    removed = 0
    staging = f"{prefix}tmp/"
    uploads = client.get_paginator("list_multipart_uploads")
    for page in uploads.paginate(Bucket=bucket, Prefix=staging):
        for upload in page.get("Uploads", []):
            started = upload["Key"].rpartition("/")[2].partition("-")[0]
            touched = float(started) if started.isdigit() else upload["Initiated"].timestamp()
            parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            touched = max([touched, *(p["LastModified"].timestamp() for p in parts.get("Parts", []))])
            if touched < cutoff:
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                removed += 1
    objects = client.get_paginator("list_objects_v2")
    for page in objects.paginate(Bucket=bucket, Prefix=staging):
        for obj in page.get("Contents", []):
            if obj["LastModified"].timestamp() < cutoff:
                client.delete_object(Bucket=bucket, Key=obj["Key"])
                removed += 1
    if removed:
        log.info("removed %d stale upload(s) from s3://%s/%s", removed, bucket, staging)
    return removed
