"""The :class:`S3Storage`: keys stored as objects in a bucket, read through a local cache.

See :mod:`core.storage_s3` for what lives where; uploads are :mod:`core.storage_s3.uploads`, the
bounded copies :mod:`core.storage_s3.cache`.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.storage import PROCESS_STARTED, Storage, TempWrite
from core.storage_s3.cache import ReadCache
from core.storage_s3.client import is_missing, make_client, parse_s3_url, s3_errors
from core.storage_s3.uploads import STALE_UPLOAD_SECONDS, S3TempWrite, staging_key, sweep_stale_uploads

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)


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
        self.part_bytes = part_bytes
        self.cache = ReadCache(self.root, cache_max_bytes)

    @property
    def cache_max_bytes(self) -> int:
        """The bound of the local copies of stored objects."""
        return self.cache.max_bytes

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
            staging_key=staging_key(self.prefix, name),
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
        self.cache.evict(keep=target)
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
            self.cache.touch(target)
            return target
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        partial = self.root / "tmp" / f"{uuid.uuid4().hex}.get"
        try:
            with s3_errors(f"read {key}"):
                try:
                    self.client.download_file(self.bucket, self.object_key(key), str(partial))
                except Exception as exc:
                    if is_missing(exc):
                        raise FileNotFoundError(f"no stored object {key!r}") from None
                    raise
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        self.cache.evict(keep=target)
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
            removed += sweep_stale_uploads(
                self.client, self.bucket, self.prefix, cutoff - STALE_UPLOAD_SECONDS
            )
        except Exception:
            # A store that is down at start must not keep the API or a worker from starting.
            log.warning(
                "could not sweep stale uploads in s3://%s/%stmp/", self.bucket, self.prefix, exc_info=True
            )
        return removed

    def cached_bytes(self) -> int:
        """The size of the local copies of stored objects together (within ``cache_max_bytes``)."""
        return self.cache.total_bytes()
