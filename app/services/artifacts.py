"""Finding a job's artifact for download and checking a Range header before streaming it."""

from __future__ import annotations

import re
from pathlib import Path

from core.db.models import Artifact, Job, JobStatus
from core.errors import InvalidRange, JobNotFinished, JobNotSucceeded, NotFound, RangeNotSatisfiable
from core.storage import Storage

_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def find_artifact(*, job: Job, name: str) -> Artifact:
    """The artifact; 409 unless the job succeeded, 404 for an unknown name."""
    if not job.finished:
        raise JobNotFinished(f"job {job.id} is {job.status}; artifacts are available once it succeeds")
    if job.status != JobStatus.SUCCEEDED.value:
        raise JobNotSucceeded(f"job {job.id} {job.status}; it has no artifacts to download")
    artifact = next((a for a in job.artifacts if a.name == name), None)
    if artifact is None:
        known = ", ".join(a.name for a in job.artifacts) or "none"
        raise NotFound(f"job {job.id} has no artifact {name!r} (artifacts: {known})")
    return artifact


def artifact_file(*, job: Job, artifact: Artifact, storage: Storage) -> Path:
    """A local file with the artifact's bytes (from an object store: the API's cached copy).

    Raises:
        NotFound: the artifact is recorded but its file is gone. StorageUnavailable: the store failed.
    """
    try:
        path = storage.local_path(artifact.storage_key)
    except FileNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise NotFound(f"artifact {artifact.name!r} of job {job.id} is recorded but its file is missing")
    return path


def check_range(header: str | None, size: int) -> None:
    """Refuses a malformed (400) or unsatisfiable (416) ``Range``; valid ones are served as asked.

    Raises:
        InvalidRange: the header is not ``bytes=`` followed by ranges like ``0-99``, ``100-`` or ``-50``.
        RangeNotSatisfiable: no range overlaps the file (answered with ``Content-Range: bytes */size``).
    """
    if header is None:
        return
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        raise InvalidRange(f"malformed Range header {header!r}; expected e.g. 'bytes=0-1023'")
    satisfiable = False
    for spec in specs.split(","):
        match = _RANGE.match(spec)
        if match is None or match.groups() == ("", ""):
            raise InvalidRange(f"malformed range {spec.strip()!r} in Range header {header!r}")
        first, last = match.groups()
        if first and last and int(last) < int(first):
            raise InvalidRange(f"range {spec.strip()!r} ends before it starts")
        satisfiable |= (int(first) < size) if first else (int(last) > 0 and size > 0)
    if not satisfiable:
        raise RangeNotSatisfiable(
            f"Range {header!r} lies outside the {size}-byte file",
            headers={"Content-Range": f"bytes */{size}"},
        )
