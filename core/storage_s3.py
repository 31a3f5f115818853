"""Object storage: :class:`core.storage.Storage`'s interface over an S3-compatible store (S3,
MinIO, Ceph, R2).

Chosen by ``NNCOMPRESS_STORAGE_URL=s3://bucket/prefix``; the endpoint, credentials and region are
boto3's standard ``AWS_*`` variables. Every key lives at ``<prefix>/<key>`` in the bucket.

The local folder (``cache_dir``) is no store of record here, only this process's working space:

- ``tmp/``: an upload's scratch copy, which intake reads (safetensors headers, zip central
  directories, the data set loaders need random access), and downloads in flight;
- ``work/<job_id>/``: a job's artifacts while it runs, published to the store when it succeeds
  and then deleted;
- ``models/``, ``datasets/``, ``jobs/``: copies of stored objects fetched to be read, kept
  least-recently-used first within ``cache_max_bytes``.

An upload streams into a multipart upload as it arrives (parts of ``s3_part_bytes``, at most
:data:`PARTS_IN_FLIGHT` waiting in memory), hashed on the way. The object key is only known once
intake accepted the file, so the parts go to a staging key under ``tmp/`` that the commit copies
server-side; a refusal or a 413 aborts the multipart upload, and nothing is left in the bucket.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import StorageUnavailable
from core.storage import PROCESS_STARTED, Storage, TempWrite

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

# Parts uploaded or queued while the next one fills: with 8 MiB parts an upload holds about 24 MiB.
PARTS_IN_FLIGHT = 2
# A multipart upload or staging object is swept only when nothing touched it this long before the
# sweeping process started: another API replica may be streaming into it right now.
STALE_UPLOAD_SECONDS = 3600.0
_CACHED_TOPS = ("models", "datasets", "jobs")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix/")`` (prefix "" when none)."""
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


def _missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
    return code in {"404", "NoSuchKey", "NotFound"}


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


class S3Storage(Storage):
    """Keys stored as objects under ``prefix`` in ``bucket``; ``root`` is the local cache and scratch."""

    def __init__(
        self,
        root: Path,
        *,
        client: Any,
        bucket: str,
        prefix: str = "",
        cache_max_bytes: int = 20 << 30,
        part_bytes: int = 8 << 20,
    ) -> None:
        super().__init__(root)
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.cache_max_bytes, self.part_bytes = cache_max_bytes, part_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        assert settings.storage_url is not None
        bucket, prefix = parse_s3_url(settings.storage_url)
        return cls(
            settings.cache_dir,
            client=make_client(),
            bucket=bucket,
            prefix=prefix,
            cache_max_bytes=settings.cache_max_bytes,
            part_bytes=settings.s3_part_bytes,
        )

    def object_key(self, key: str) -> str:
        self.path(key)  # the same key rules as the local folder
        return self.prefix + key

    def ensure_dirs(self) -> None:
        for name in ("tmp", "work"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def check(self) -> None:
        with s3_errors(f"reach the bucket {self.bucket!r}"):
            self.client.head_bucket(Bucket=self.bucket)

    def temp_write(self, limit: int) -> S3TempWrite:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}.part"
        return S3TempWrite(
            self.root / "tmp" / name,
            limit,
            client=self.client,
            bucket=self.bucket,
            # The start time in the name: stores differ in what they report as an upload's start.
            staging_key=f"{self.prefix}tmp/{int(time.time())}-{name}",
            part_bytes=self.part_bytes,
        )

    def commit(self, temp: TempWrite, key: str) -> Path:
        """Stores the upload as ``key``; its scratch file becomes the cached copy (intake read it)."""
        if not isinstance(temp, S3TempWrite):
            raise TypeError(f"an S3 storage commits its own temp writes, not {type(temp).__name__}")
        try:
            temp.finish(self.object_key(key))
        except BaseException:
            temp.discard()  # the store failed: abort the parts, drop the scratch copy
            raise
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp.path, target)
        self._evict(keep=target)
        return target

    def delete(self, key: str) -> None:
        with s3_errors("delete an object"):
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        self.path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path:
        """The cached copy of ``key``, fetched first when missing.

        Raises:
            FileNotFoundError: no such object. StorageUnavailable: the store failed.
        """
        target = self.path(key)
        if target.is_file():
            os.utime(target)  # recently used: evicted last
            return target
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        partial = self.root / "tmp" / f"{uuid.uuid4().hex}.get"
        try:
            with s3_errors(f"read {key}"):
                try:
                    self.client.download_file(self.bucket, self.object_key(key), str(partial))
                except Exception as exc:
                    if _missing(exc):
                        raise FileNotFoundError(f"no stored object {key!r}") from None
                    raise
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        self._evict(keep=target)
        return target

    def job_dir(self, job_id: str) -> Path:
        self.path(f"jobs/{job_id}")  # the id is a valid key part
        return self.root / "work" / job_id

    def publish(self, local: Path, key: str) -> None:
        with s3_errors(f"store {key}"):
            self.client.upload_file(str(local), self.bucket, self.object_key(key))

    def release_job_dir(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def presigned_url(self, key: str, *, expires_seconds: int, filename: str, media_type: str) -> str | None:
        params = {
            "Bucket": self.bucket,
            "Key": self.object_key(key),
            "ResponseContentType": media_type,
            "ResponseContentDisposition": f'attachment; filename="{filename}"',
        }
        with s3_errors("sign a download URL"):
            url: str = self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_seconds
            )
        return url

    def sweep_partial_uploads(self, before: float | None = None) -> int:
        """Deletes scratch files and job folders an earlier process left here, and stale multipart
        uploads and staging objects in the bucket; returns how many."""
        cutoff = PROCESS_STARTED if before is None else before
        removed = 0
        for folder in (self.root / "tmp", self.root / "work"):
            for entry in folder.glob("*") if folder.is_dir() else ():
                try:
                    if entry.lstat().st_mtime >= cutoff:
                        continue
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink()
                    removed += 1
                except FileNotFoundError:
                    continue
        try:
            removed += self._sweep_bucket(cutoff - STALE_UPLOAD_SECONDS)
        except Exception:
            # A store that is down at start must not keep the API or a worker from starting.
            log.warning(
                "could not sweep stale uploads in s3://%s/%stmp/", self.bucket, self.prefix, exc_info=True
            )
        return removed

    def _sweep_bucket(self, cutoff: float) -> int:
        removed = 0
        staging = f"{self.prefix}tmp/"
        uploads = self.client.get_paginator("list_multipart_uploads")
        for page in uploads.paginate(Bucket=self.bucket, Prefix=staging):
            for upload in page.get("Uploads", []):
                started = upload["Key"].rpartition("/")[2].partition("-")[0]
                touched = float(started) if started.isdigit() else upload["Initiated"].timestamp()
                parts = self.client.list_parts(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                touched = max([touched, *(p["LastModified"].timestamp() for p in parts.get("Parts", []))])
                if touched < cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        objects = self.client.get_paginator("list_objects_v2")
        for page in objects.paginate(Bucket=self.bucket, Prefix=staging):
            for obj in page.get("Contents", []):
                if obj["LastModified"].timestamp() < cutoff:
                    self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])
                    removed += 1
        if removed:
            log.info("removed %d stale upload(s) from s3://%s/%s", removed, self.bucket, staging)
        return removed

    def cached_bytes(self) -> int:
        return sum(size for _, size, _ in self._cached())

    def _cached(self) -> list[tuple[float, int, Path]]:
        """``(last used, size, path)`` of every cached copy."""
        found = []
        for top in _CACHED_TOPS:
            for path in (self.root / top).rglob("*"):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if path.is_file():
                    found.append((st.st_mtime, st.st_size, path))
        return found

    def _evict(self, *, keep: Path) -> None:
        """Deletes the least recently used copies until the cache is within ``cache_max_bytes``.

        A copy another thread is reading stays readable (an unlinked file lives while it is open);
        one handed out but not yet opened could go, which only an upload or fetch of more than the
        whole bound in between can cause.
        """
        entries = sorted(self._cached())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.cache_max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            _remove_empty_parents(path.parent, self.root)


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty, or already gone
            return
        folder = folder.parent
