"""The client's calls: models, jobs, following a job, downloading its artifacts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from httpx_sse import EventSource, SSEError

from nncompress.client.errors import (
    PROBLEM_PREFIX,
    ChecksumMismatch,
    ServiceError,
    ServiceUnreachable,
    StreamUnavailable,
    WaitTimeout,
)
from nncompress.client.transport import (
    ObservedStream,
    Transport,
    path_segment,
    unreachable_on_transport_errors,
    upload_file_name,
)

JSON = dict[str, Any]
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
_CHUNK = 1024 * 1024
_TRANSIENT = (502, 503, 504)  # a proxy or balancer in front of a restarting API


class Client:
    """Talks to one nncompress server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000`` (a trailing slash or ``/v1`` is not needed).
        api_key: sent as ``Authorization: Bearer <key>`` to this server only, never to a host it
            redirects to (an artifact's presigned URL carries its own credential).
        timeout: seconds for each HTTP request (connect and each read), not for a whole job;
            :meth:`wait` has its own deadline.

    A client keeps its connections open between calls; :meth:`close` (or ``with Client(...)``) ends them.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._transport = Transport(self.base_url, api_key, timeout)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        named = [("file", Path(path))] + ([("config", Path(config))] if config is not None else [])
        with contextlib.ExitStack() as stack:
            # httpx reads an open file in 64 KiB chunks while sending, and sizes the body from the
            # files' lengths, so a 1 GiB model goes out with a Content-Length and never sits in memory.
            files = [
                (field, (upload_file_name(p), stack.enter_context(p.open("rb")), "application/octet-stream"))
                for field, p in named
            ]
            return self._transport.json("POST", "/v1/models", data=fields, files=files)

    def get_model(self, model_id: str) -> JSON:
        return self._transport.json("GET", f"/v1/models/{path_segment(model_id)}")

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
        return self._transport.json("POST", f"/v1/models/{path_segment(model_id)}/preflight", json=payload)

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
        return self._transport.json("POST", "/v1/jobs", json=payload, headers=headers)

    def get_job(self, job_id: str) -> JSON:
        return self._transport.json("GET", f"/v1/jobs/{path_segment(job_id)}")

    def list_jobs(
        self, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JSON:
        """One page: ``{"items": [...], "next_cursor": str | None}``."""
        return self._transport.json(
            "GET", "/v1/jobs", params={"status": status, "limit": limit, "cursor": cursor}
        )

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
        return self._transport.json("GET", f"/v1/jobs/{path_segment(job_id)}/events", params={"after": after})

    def iter_events(self, job_id: str) -> Iterator[JSON]:
        """Every recorded event of the job, following ``next_cursor`` (the last id seen) page by page."""
        after: int | None = None
        while True:
            page = self.events(job_id, after=after)
            yield from page.get("items") or ()
            after = page.get("next_cursor")
            if not page.get("items") or after is None:
                return

    def cancel(self, job_id: str) -> JSON:
        """Asks for cancellation; the job goes ``cancelling`` then ``cancelled`` (or was already done)."""
        return self._transport.json("POST", f"/v1/jobs/{path_segment(job_id)}/cancel")

    def stream_events(self, job_id: str, last_event_id: int | None = None) -> Iterator[JSON]:
        """The job's events as they happen (server-sent events), from after ``last_event_id``.

        Ends when the server ends the stream, which it does once the job has finished and every
        event was sent. Raises :class:`StreamUnavailable` when the server has no event stream.
        """
        yield from self._sse(job_id, last_event_id, self.timeout)

    def _sse(
        self,
        job_id: str,
        last_event_id: int | None,
        read_timeout: float,
        on_bytes: Callable[[], None] | None = None,
    ) -> Iterator[JSON]:
        """The stream's events as dicts; ``on_bytes`` is called whenever bytes arrive, keep-alive
        comments included (httpx-sse hides those), so a caller can check its deadline on a quiet job."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        path = f"/v1/jobs/{path_segment(job_id)}/events/stream"
        try:
            response = self._transport.send("GET", path, headers=headers, timeout=read_timeout, stream=True)
        except ServiceError as exc:
            if exc.status in (404, 405, 406, 501):
                raise StreamUnavailable(str(exc)) from None
            raise
        with contextlib.closing(response), unreachable_on_transport_errors("GET", path):
            if on_bytes is not None:
                response.stream = ObservedStream(response.stream, on_bytes)
            try:
                for sse in EventSource(response).iter_sse():
                    if sse.data:  # the "retry:" frame and blank keep-alive frames carry none
                        yield json.loads(sse.data)
            except SSEError as exc:  # a proxy, or an older server, answered with something else
                raise StreamUnavailable(str(exc)) from None

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
                transient = isinstance(exc, ServiceUnreachable) or exc.status in _TRANSIENT
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

        def check_deadline() -> None:
            waited = time.monotonic() - start
            if deadline is not None and waited >= deadline:
                raise WaitTimeout(job, waited)

        while True:
            check_deadline()
            waited = time.monotonic() - start
            read_timeout = (
                self.timeout if deadline is None else max(0.05, min(self.timeout, deadline - waited))
            )
            try:
                for event in self._sse(str(job["id"]), last_id, read_timeout, on_bytes=check_deadline):
                    last_answer = time.monotonic()
                    last_id = int(event.get("id", last_id or 0))
                    job = {**job, **{k: event.get(k) for k in ("status", "stage", "progress")}}
                    progress.report(job)
                return job  # the server ends the stream once the job has finished
            except StreamUnavailable:
                return job
            except ServiceError as exc:
                if not (isinstance(exc, ServiceUnreachable) or exc.status in _TRANSIENT):
                    raise
                if time.monotonic() - last_answer > outage_tolerance:
                    return job  # let polling decide, with its own tolerance
                time.sleep(pause)

    def download_artifact(self, job_id: str, name: str, dest: str | os.PathLike[str]) -> Path:
        """Streams an artifact to disk and checks it against the sha256 and size the job lists.

        Args:
            dest: a directory (the file keeps ``name``) or a file path.

        Returns:
            The path written. A partial download (``<file>.part``, left by a dropped connection) is
            resumed with a Range request; a server that ignores the Range is read from the start.

        Raises:
            ChecksumMismatch: the bytes differ from the job's record; nothing is left at ``dest``.
            ServiceUnreachable: the connection failed; what arrived stays in ``<file>.part``.
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
        # The API answers itself, or with a 307 to the object store's presigned URL (Transport.send).
        url = meta.get("url") or f"/v1/jobs/{path_segment(job_id)}/artifacts/{path_segment(name)}"
        if offset < int(meta["size_bytes"]):  # else a complete .part (not yet renamed) is only checked
            digest = self._fetch(url, part, offset, digest)
        size = part.stat().st_size
        if digest.hexdigest() != meta["sha256"] or size != int(meta["size_bytes"]):
            part.unlink()
            raise ChecksumMismatch(
                f"{name}: got {size} bytes sha256 {digest.hexdigest()}, "
                f"job lists {meta['size_bytes']} bytes sha256 {meta['sha256']}"
            )
        part.replace(target)
        return target

    def _fetch(self, url: str, part: Path, offset: int, digest: hashlib._Hash) -> hashlib._Hash:
        """Appends the bytes after ``offset`` to ``part`` (all of them, afresh, if the server ignores
        the Range); returns the sha256 of what ``part`` then holds."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self._transport.send("GET", url, headers=headers, stream=True)
        with contextlib.closing(response), unreachable_on_transport_errors("GET", url):
            if offset and response.status_code != 206:  # the server ignored the Range: start again
                digest, offset = hashlib.sha256(), 0
            with part.open("ab" if offset else "wb") as out:
                for block in response.iter_bytes():  # as it arrives: a cut keeps what came
                    digest.update(block)
                    out.write(block)
        return digest

    # -- health -----------------------------------------------------------------------------------

    def healthz(self) -> JSON:
        return self._transport.json("GET", "/healthz")

    def readyz(self) -> JSON:
        return self._transport.json("GET", "/readyz")


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
