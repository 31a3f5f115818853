"""A small client for the nncompress HTTP API, on the standard library alone.

The engine's install needs nothing beyond torch to talk to a server: this module uses ``urllib`` only,
so an MLOps pipeline can upload, submit, poll and download without hand-written HTTP.

Examples:
    >>> from nncompress.client import Client
    >>> c = Client("http://127.0.0.1:8000")                                     # doctest: +SKIP
    >>> model = c.upload_model("net.safetensors", architecture="mnist_net")     # doctest: +SKIP
    >>> job = c.create_job(model["id"], config_list=[{"sparsity_per_layer": 0.5, "op_types": ["Conv2d"]}],
    ...                    idempotency_key="build-1234")                        # doctest: +SKIP
    >>> job = c.wait(job["id"], on_progress=lambda j: print(j["stage"], j["progress"]))  # doctest: +SKIP
    >>> c.download_artifact(job["id"], "model.safetensors", "out/")             # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "TERMINAL_STATUSES",
    "ChecksumMismatch",
    "Client",
    "ServiceError",
    "ServiceUnreachable",
    "StreamUnavailable",
    "WaitTimeout",
]

JSON = dict[str, Any]
PROBLEM_PREFIX = "urn:nncompress:problem:"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
_CHUNK = 1024 * 1024


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


class _Progress:
    """Calls ``on_progress`` when the (status, stage, progress) of the job changes."""

    def __init__(self, callback: Callable[[JSON], None] | None) -> None:
        self.callback = callback
        self.seen: tuple[Any, ...] | None = None

    def report(self, job: JSON) -> None:
        key = (job.get("status"), job.get("stage"), job.get("progress"))
        if self.callback is not None and key != self.seen:
            self.callback(job)
        self.seen = key


class WaitTimeout(TimeoutError):
    """The job did not finish before the deadline; ``job`` is its last seen state."""

    def __init__(self, job: JSON, waited: float) -> None:
        super().__init__(
            f"job {job.get('id')} still {job.get('status')} ({job.get('stage')}, "
            f"{job.get('progress')}%) after {waited:.0f}s"
        )
        self.job = job


class Client:
    """Talks to one nncompress server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000`` (a trailing slash or ``/v1`` is not needed).
        api_key: sent as ``Authorization: Bearer <key>`` when given.
        timeout: seconds for each HTTP request (connect and each read), not for a whole job;
            :meth:`wait` has its own deadline.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    # -- models -----------------------------------------------------------------------------------

    def upload_model(
        self,
        path: str | os.PathLike[str],
        architecture: str | None = None,
        format: str | None = None,
        *,
        config: str | os.PathLike[str] | None = None,
    ) -> JSON:
        """Uploads a model file (streamed from disk, never read whole) and returns the model record.

        Args:
            path: safetensors or state_dict weights (give ``architecture``), ONNX, a zip of a Hugging
                Face ``save_pretrained`` folder or of an ONNX model with its external data, or a
                pickled module where the server allows it.
            architecture: for weights only: ``mnist_net``, ``torchvision/resnet50``, ``timm/resnet18``.
            format: the format the server must find (it is checked, not trusted).
            config: a Hugging Face ``config.json`` sent with its ``model.safetensors`` as ``path``.
        """
        fields = {
            **({"architecture": architecture} if architecture else {}),
            **({"format": format} if format else {}),
        }
        files = [("file", Path(path))] + ([("config", Path(config))] if config is not None else [])
        body, length, content_type = _multipart(fields, files)
        return self._json(
            "POST",
            "/v1/models",
            body=body,
            headers={"Content-Type": content_type, "Content-Length": str(length)},
        )

    def get_model(self, model_id: str) -> JSON:
        return self._json("GET", f"/v1/models/{_seg(model_id)}")

    def preflight(
        self,
        model_id: str,
        config_list: list[Any],
        pruner: str = "l1norm",
        input_shape: list[int] | None = None,
    ) -> JSON:
        """Resolves ``config_list`` against the model without pruning: matched layers, groups, problems."""
        payload: JSON = {"config_list": config_list, "pruner": pruner}
        if input_shape is not None:
            payload["input_shape"] = list(input_shape)
        return self._json("POST", f"/v1/models/{_seg(model_id)}/preflight", payload=payload)

    # -- jobs -------------------------------------------------------------------------------------

    def create_job(
        self,
        model_id: str,
        config_list: list[Any],
        *,
        pruner: str = "l1norm",
        speedup: bool = True,
        device: str = "cpu",
        input_shape: list[int] | None = None,
        export_onnx: bool = True,
        verify: bool = True,
        options: JSON | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Submits a job (202); the same ``idempotency_key`` sent twice returns the same job."""
        payload: JSON = {
            "model_id": model_id,
            "pruner": pruner,
            "config_list": config_list,
            "speedup": speedup,
            "device": device,
            "input_shape": list(input_shape) if input_shape is not None else None,
            "export_onnx": export_onnx,
            "verify": verify,
        }
        if options:
            payload["options"] = options
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/v1/jobs", payload=payload, headers=headers)

    def get_job(self, job_id: str) -> JSON:
        return self._json("GET", f"/v1/jobs/{_seg(job_id)}")

    def list_jobs(
        self, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JSON:
        """One page: ``{"items": [...], "next_cursor": str | None}``."""
        return self._json("GET", "/v1/jobs", query={"status": status, "limit": limit, "cursor": cursor})

    def iter_jobs(self, status: str | None = None, page_size: int = 50) -> Iterator[JSON]:
        """Every job, following ``next_cursor`` page by page."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(status=status, limit=page_size, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def events(self, job_id: str, after: int | None = None) -> JSON:
        """The job's recorded transitions: ``{"items": [...], "next_cursor": ...}``."""
        return self._json("GET", f"/v1/jobs/{_seg(job_id)}/events", query={"after": after})

    def cancel(self, job_id: str) -> JSON:
        """Asks for cancellation; the job goes ``cancelling`` then ``cancelled`` (or was already done)."""
        return self._json("POST", f"/v1/jobs/{_seg(job_id)}/cancel")

    def stream_events(self, job_id: str, last_event_id: int | None = None) -> Iterator[JSON]:
        """The job's events as they happen (server-sent events), from after ``last_event_id``.

        Ends when the server ends the stream, which it does once the job has finished and every
        event was sent. Raises :class:`StreamUnavailable` when the server has no event stream.
        """
        for event in self._sse(job_id, last_event_id, self.timeout):
            if event is not None:
                yield event

    def _sse(self, job_id: str, last_event_id: int | None, read_timeout: float) -> Iterator[JSON | None]:
        """SSE frames as dicts; None for a keep-alive comment, so a caller can check its deadline."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        try:
            resp = self._open(
                "GET", f"/v1/jobs/{_seg(job_id)}/events/stream", headers=headers, timeout=read_timeout
            )
        except ServiceError as exc:
            if exc.status in (404, 405, 406, 501):
                raise StreamUnavailable(str(exc)) from None
            raise
        with resp:
            if not str(resp.headers.get("Content-Type", "")).startswith("text/event-stream"):
                raise StreamUnavailable("the server answered the event stream with something else")
            data: list[str] = []
            for raw in resp:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith(":"):
                    yield None
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:
                    yield json.loads("\n".join(data))
                    data = []

    def wait(
        self,
        job_id: str,
        on_progress: Callable[[JSON], None] | None = None,
        deadline: float | None = None,
        poll_interval: float = 0.5,
        outage_tolerance: float = 60.0,
        stream: bool = True,
    ) -> JSON:
        """Follows the job until it is succeeded, failed or cancelled, and returns it.

        The job's live event stream is followed (resumed with ``Last-Event-ID`` after a dropped
        connection); a server without one is polled instead.

        Args:
            on_progress: called with the job whenever its status, stage or progress changes (while
                streaming, with the status, stage and progress of each event).
            deadline: at most this many seconds to wait (``None``: forever); then :class:`WaitTimeout`.
            poll_interval: seconds between polls (and before reconnecting a dropped stream).
            outage_tolerance: seconds of no answer (or 502/503/504) to wait out, e.g. an API restart
                during a long job; the job's state lives in the database, so polling can resume.
            stream: False polls from the start.
        """
        start = time.monotonic()
        progress = _Progress(on_progress)
        job: JSON = {"id": job_id, "status": "unknown"}
        if stream:
            job = self._follow_stream(job, progress, start, deadline, poll_interval, outage_tolerance)
        last_answer = time.monotonic()
        while True:
            try:
                job = self.get_job(job_id)
                last_answer = time.monotonic()
            except ServiceError as exc:
                transient = isinstance(exc, ServiceUnreachable) or exc.status in (502, 503, 504)
                if not transient or time.monotonic() - last_answer > outage_tolerance:
                    raise
            else:
                progress.report(job)
                if job.get("status") in TERMINAL_STATUSES:
                    return job
            waited = time.monotonic() - start
            if deadline is not None and waited >= deadline:
                raise WaitTimeout(job, waited)
            pause = poll_interval if deadline is None else min(poll_interval, max(deadline - waited, 0.0))
            time.sleep(pause)

    def _follow_stream(
        self,
        job: JSON,
        progress: _Progress,
        start: float,
        deadline: float | None,
        pause: float,
        outage_tolerance: float,
    ) -> JSON:
        """Reports the stream's events until it ends (the job finished) or cannot be had; returns
        the job as last seen. The caller then reads the finished job (or polls)."""
        last_id: int | None = None
        last_answer = time.monotonic()
        while True:
            waited = time.monotonic() - start
            if deadline is not None and waited >= deadline:
                raise WaitTimeout(job, waited)
            read_timeout = (
                self.timeout if deadline is None else max(0.05, min(self.timeout, deadline - waited))
            )
            try:
                for event in self._sse(str(job["id"]), last_id, read_timeout):
                    last_answer = time.monotonic()
                    if event is not None:
                        last_id = int(event.get("id", last_id or 0))
                        job = {**job, **{k: event.get(k) for k in ("status", "stage", "progress")}}
                        progress.report(job)
                    waited = time.monotonic() - start
                    if deadline is not None and waited >= deadline:
                        raise WaitTimeout(job, waited)
                return job  # the server ends the stream once the job has finished
            except StreamUnavailable:
                return job
            except (ServiceError, TimeoutError, OSError, http.client.HTTPException) as exc:
                status = getattr(exc, "status", None)
                transient = not isinstance(exc, ServiceError) or isinstance(exc, ServiceUnreachable)
                if not (transient or status in (502, 503, 504)):
                    raise
                if time.monotonic() - last_answer > outage_tolerance:
                    return job  # let polling decide, with its own tolerance
                time.sleep(pause)

    def download_artifact(self, job_id: str, name: str, dest: str | os.PathLike[str]) -> Path:
        """Streams an artifact to disk and checks it against the sha256 and size the job lists.

        Args:
            dest: a directory (the file keeps ``name``) or a file path.

        Returns:
            The path written. A partial download (``<file>.part``) is resumed with a Range request.

        Raises:
            ChecksumMismatch: the bytes differ from the job's record; nothing is left at ``dest``.
        """
        job = self.get_job(job_id)
        listed = {a["name"]: a for a in job.get("artifacts", [])}
        if name not in listed:
            raise ServiceError(
                type=PROBLEM_PREFIX + "artifact_not_found",
                status=404,
                title="Artifact not listed",
                detail=f"job {job_id} ({job.get('status')}) lists "
                f"{sorted(listed) or 'no artifacts'}, not {name!r}",
            )
        meta = listed[name]
        dest = Path(dest)
        target = dest / Path(name).name if dest.is_dir() else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        offset = part.stat().st_size if part.exists() else 0
        if offset > int(meta["size_bytes"]):
            part.unlink()
            offset = 0
        if offset:
            with part.open("rb") as fh:
                for block in iter(lambda: fh.read(_CHUNK), b""):
                    digest.update(block)
        url = meta.get("url") or f"/v1/jobs/{_seg(job_id)}/artifacts/{_seg(name)}"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self._open("GET", url, headers=headers) as resp:
            if offset and resp.status != 206:  # the server ignored the Range: start again
                digest, offset = hashlib.sha256(), 0
            with part.open("ab" if offset else "wb") as out:
                for block in iter(lambda: resp.read(_CHUNK), b""):
                    digest.update(block)
                    out.write(block)
        size = part.stat().st_size
        if digest.hexdigest() != meta["sha256"] or size != int(meta["size_bytes"]):
            part.unlink()
            raise ChecksumMismatch(
                f"{name}: got {size} bytes sha256 {digest.hexdigest()}, "
                f"job lists {meta['size_bytes']} bytes sha256 {meta['sha256']}"
            )
        part.replace(target)
        return target

    # -- health -----------------------------------------------------------------------------------

    def healthz(self) -> JSON:
        return self._json("GET", "/healthz")

    def readyz(self) -> JSON:
        return self._json("GET", "/readyz")

    # -- transport --------------------------------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        *,
        payload: Any = None,
        body: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> JSON:
        headers = dict(headers or {})
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        with self._open(method, path, body=body, query=query, headers=headers) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else {}

    def _open(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        if "Accept" not in (headers or {}):
            req.add_header("Accept", "application/json, application/problem+json;q=0.9, */*;q=0.5")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raise _problem(exc) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnreachable(
                type=PROBLEM_PREFIX + "unreachable",
                status=None,
                title="Server unreachable",
                detail=f"{method} {url}: {reason}",
            ) from None


def _problem(exc: urllib.error.HTTPError) -> ServiceError:
    """Turns an HTTP error answer into a ServiceError, from its problem+json body when it has one."""
    raw = exc.read() or b""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "type" in doc:
        return ServiceError(
            type=str(doc["type"]),
            status=int(doc.get("status") or exc.code),
            title=str(doc.get("title") or exc.reason),
            detail=str(doc.get("detail") or ""),
            errors=doc.get("errors") if isinstance(doc.get("errors"), list) else None,
        )
    # Not a problem document (a proxy in the way, or a bug): keep the start of the body for the user.
    return ServiceError(
        type="about:blank",
        status=exc.code,
        title=str(exc.reason),
        detail=raw[:500].decode("utf-8", "replace"),
    )


def _seg(value: str) -> str:
    """Quotes one path segment, so an id can never change the path it is put into."""
    return urllib.parse.quote(str(value), safe="")


def _multipart(fields: dict[str, str], files: list[tuple[str, Path]]) -> tuple[Iterator[bytes], int, str]:
    """A multipart/form-data body as an iterator of chunks plus its exact length.

    Each file is read in 1 MiB chunks while the request is sent, so uploading a 1 GiB model holds
    1 MiB in memory; the length is known up front so no chunked encoding is needed.
    """
    boundary = f"nncompress-{uuid.uuid4().hex}"
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    parts: list[tuple[bytes, Path]] = []
    for index, (field_name, path) in enumerate(files):
        filename = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        part_head = (
            ("\r\n" if index else "") + f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        parts.append((part_head, path))
    parts[0] = (head + parts[0][0], parts[0][1])
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = sum(len(part_head) + path.stat().st_size for part_head, path in parts)

    def chunks() -> Iterator[bytes]:
        for part_head, path in parts:
            yield part_head
            with path.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    yield chunk
        yield tail

    return chunks(), size + len(tail), f"multipart/form-data; boundary={boundary}"
