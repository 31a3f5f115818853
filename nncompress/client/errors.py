"""The client's errors: a server's problem+json answer, no answer at all, a bad download, a timeout."""

from __future__ import annotations

from typing import Any

PROBLEM_PREFIX = "urn:nncompress:problem:"


class ServiceError(Exception):
    """An error answer from the server, carrying its ``application/problem+json`` fields.

    Attributes:
        type: the problem type, e.g. ``urn:nncompress:problem:not_found``.
        status: the HTTP status (``None`` when the server could not be reached).
        title: short summary.
        detail: what went wrong with this request.
        errors: per-field details (entry, key, layer) when the server gives them.
    """

    def __init__(
        self,
        *,
        type: str,
        status: int | None,
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if status else f"{title}: {detail}")
        self.type = type
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []

    @property
    def code(self) -> str:
        """The stable part of ``type`` (``not_found`` for ``urn:nncompress:problem:not_found``)."""
        return self.type.removeprefix(PROBLEM_PREFIX)


class ServiceUnreachable(ServiceError):
    """No HTTP answer at all: connection refused, DNS failure, timeout."""


class ChecksumMismatch(Exception):
    """A downloaded artifact's sha256 or size differs from what the job lists; the file is not kept."""


class StreamUnavailable(Exception):
    """The server has no event stream for the job (an older server); :meth:`Client.wait` polls then."""


class WaitTimeout(TimeoutError):
    """The job did not finish before the deadline; ``job`` is its last seen state."""

    def __init__(self, job: dict[str, Any], waited: float) -> None:
        super().__init__(
            f"job {job.get('id')} still {job.get('status')} ({job.get('stage')}, "
            f"{job.get('progress')}%) after {waited:.0f}s"
        )
        self.job = job
