"""Storage of uploads, data sets and artifacts, addressed by keys the service generates.

Keys look like ``models/<id>/upload.bin`` or ``jobs/<job_id>/<artifact name>``; no user-supplied
file name ever becomes part of a path. :class:`Storage` keeps them in a local folder (the embedded
default); ``core.storage_s3.S3Storage`` is the same interface over an S3-compatible store, with that
folder as its local cache. :func:`open_storage` picks one from the settings. Writes go to a temp
file and are renamed into place, so a failed or oversize upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)
# Taken when the process first imports storage, before it serves or runs anything.
PROCESS_STARTED = time.time()
_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def model_key(model_id: str) -> str:
    return f"models/{model_id}/upload.bin"


def config_key(model_id: str) -> str:
    """A Hugging Face config.json uploaded as its own part, next to the weights."""
    return f"models/{model_id}/config.json"


def artifact_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/{name}"


class LimitExceeded(Exception):
    """More bytes arrived than the writer's limit allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


@dataclass
class TempWrite:
    """A file being written under ``<storage>/tmp``: hashes and counts bytes, enforces a limit."""

    path: Path
    limit: int
    size: int = 0
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)

    def __post_init__(self) -> None:
        self._file = open(self.path, "xb")  # noqa: SIM115 - closed by close()/discard()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise LimitExceeded(self.limit)
        self._hash.update(chunk)
        self._file.write(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def discard(self) -> None:
        """Closes and deletes the temp file (idempotent)."""
        self._file.close()
        self.path.unlink(missing_ok=True)

    @property
    def backlog(self) -> bool:
        """True while written bytes wait to be sent on (an object store's parts); see :meth:`drain`."""
        return False

    def drain(self) -> None:
        """Blocks until the backlog is sent; the async reader calls it in a thread, off the event loop."""


class Storage:
    """A folder holding uploads and artifacts; ``path(key)`` refuses keys that leave it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def ensure_dirs(self) -> None:
        for name in ("models", "jobs", "tmp"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        parts = key.split("/")
        if not parts or not all(_KEY_PART.match(p) and p not in {".", ".."} for p in parts):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    def sweep_partial_uploads(self, before: float | None = None) -> int:
        """Deletes ``tmp/*.part`` files last written before ``before`` (default: this process's
        start); returns how many.

        An upload killed mid-stream (the process died, not the client) leaves its part behind and
        nothing else ever names it. A part still being written elsewhere (another API replica on
        shared storage) has its mtime moved by every chunk, so it is newer than the cut-off.
        """
        cutoff = PROCESS_STARTED if before is None else before
        removed = 0
        for part in (self.root / "tmp").glob("*.part"):
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink()
                    removed += 1
            except FileNotFoundError:  # another process swept it first
                continue
        if removed:
            log.info("removed %d partial upload(s) an earlier process left in %s", removed, self.root / "tmp")
        return removed

    def temp_write(self, limit: int) -> TempWrite:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        return TempWrite(self.root / "tmp" / f"{uuid.uuid4().hex}.part", limit)

    def commit(self, temp: TempWrite, key: str) -> Path:
        """Moves a finished temp file to ``key`` atomically (same filesystem)."""
        temp.close()
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp.path, target)
        return target

    def check(self) -> None:
        """Raises unless the storage can be used (readiness): here, the folder exists."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"the storage folder {self.root} does not exist")

    def local_path(self, key: str) -> Path:
        """A local file holding ``key``'s bytes, to read (here: the stored file itself)."""
        return self.path(key)

    def job_dir(self, job_id: str) -> Path:
        """The local folder a job writes its artifacts to (``jobs/<job_id>``, their keys' folder)."""
        return self.path(f"jobs/{job_id}")

    def publish(self, local: Path, key: str) -> None:
        """Stores the file ``local`` (written under :meth:`job_dir`) as ``key``; here it already is."""
        if Path(local).resolve() != self.path(key):
            raise ValueError(f"{local} is not where {key!r} is stored")

    def release_job_dir(self, job_id: str) -> None:
        """Called once a job's artifacts are published; here the folder is the stored copy, so kept."""

    def presigned_url(self, key: str, *, expires_seconds: int, filename: str, media_type: str) -> str | None:
        """A URL that serves ``key`` without the API for a while; a local folder has none."""
        return None

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        if path.parent != self.root and not any(path.parent.iterdir()):
            path.parent.rmdir()


def open_storage(settings: Settings) -> Storage:
    """The storage the settings name: S3 for ``storage_url``, else the ``storage_dir`` folder."""
    if settings.storage_url:
        from core.storage_s3 import S3Storage  # boto3 loads only where object storage is configured

        return S3Storage.from_settings(settings)
    return Storage(settings.storage_dir)
