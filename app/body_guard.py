"""How request bodies must arrive: a minimum average rate and a longest pause, and the connection
closed when a response goes out before the body was read to its end.

uvicorn has no body timeout: an upload sending one byte a minute stays open, holding a connection, a
task and a temp file, for as long as its client likes. And after an early response (413, 401, 429)
uvicorn keeps the connection alive by reading and discarding the rest of the body, however large;
``Connection: close`` on that response makes it close the connection instead.

The rate is measured over the time the app spent waiting for the client, not the wall time: a
server slow to consume (a loaded disk, a busy loop) must not count against the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BodyPace:
    """The slowest a request body may arrive.

    Attributes:
        min_rate: bytes per second of waiting the body must average once ``grace_seconds`` of waiting
            have passed; 0 turns the rule off.
        grace_seconds: waiting allowed before the rate is judged (a slow start, a 100-continue).
        idle_seconds: the longest wait for the next chunk.
    """

    min_rate: int
    grace_seconds: float
    idle_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyPace:
        return cls(
            min_rate=settings.upload_min_rate,
            grace_seconds=settings.upload_grace_seconds,
            idle_seconds=settings.upload_idle_seconds,
        )


class BodyTooSlow(HTTPException):
    """A 408. An HTTPException, because FastAPI turns any other error raised while it reads a JSON
    body into a 400; ``reason`` is ``idle`` or ``rate``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(408, detail)
        self.reason = reason


class _BodyClock:
    """Times one request's body: bytes received and seconds spent waiting for them."""

    def __init__(self, pace: BodyPace) -> None:
        self.pace = pace
        self.received = 0
        self.waited = 0.0

    def _budget(self) -> tuple[float, str]:
        """How long the next wait may last, and the rule that sets it."""
        if self.pace.min_rate > 0:
            # The rule is "received / waited >= min_rate once waited > grace"; solved for waited.
            allowed = max(self.pace.grace_seconds, self.received / self.pace.min_rate)
            if allowed - self.waited < self.pace.idle_seconds:
                return allowed - self.waited, "rate"
        return self.pace.idle_seconds, "idle"

    async def receive(self, receive: Receive) -> Message:
        budget, reason = self._budget()
        started = time.monotonic()
        try:
            # A chunk already buffered is returned even with no budget left: the client did deliver it.
            async with asyncio.timeout(max(budget, 0.0)):
                message = await receive()
        except TimeoutError:
            self.waited += time.monotonic() - started
            raise BodyTooSlow(reason, self._explain(reason)) from None
        self.waited += time.monotonic() - started
        self.received += len(message.get("body", b""))
        return message

    def _explain(self, reason: str) -> str:
        if reason == "idle":
            return (
                f"no request body bytes arrived for {self.pace.idle_seconds:g} s "
                f"(NNCOMPRESS_UPLOAD_IDLE_SECONDS) after {self.received} bytes"
            )
        rate = self.received / self.waited if self.waited else 0.0
        return (
            f"the request body arrived at {rate:.0f} bytes/s ({self.received} bytes in {self.waited:.1f} s), "
            f"below the minimum of {self.pace.min_rate} bytes/s (NNCOMPRESS_UPLOAD_MIN_RATE)"
        )


class BodyCuts:
    """``nncompress_request_bodies_cut_total{reason}``: bodies refused as too slow (the 408s)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter(
            "nncompress_request_bodies_cut",
            "Request bodies cut off for arriving too slowly (408), by rule: idle or rate",
            ["reason"],
            registry=registry,
        )
        for reason in ("idle", "rate"):
            self.counter.labels(reason)


class BodyGuardMiddleware:
    """Enforces ``pace`` on every request body and closes the connection after an early response."""

    def __init__(self, app: ASGIApp, pace: BodyPace, cuts: BodyCuts) -> None:
        self.app, self.pace, self.cuts = app, pace, cuts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        body_done = b"transfer-encoding" not in headers and declared in (b"", b"0")
        clock = _BodyClock(self.pace)

        async def paced_receive() -> Message:
            nonlocal body_done
            if body_done:  # past the body only a disconnect can come, whenever it likes
                return await receive()
            try:
                message = await clock.receive(receive)
            except BodyTooSlow as exc:
                self.cuts.counter.labels(exc.reason).inc()
                log.warning("request body too slow on %s %s: %s", scope["method"], scope["path"], exc.detail)
                raise
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_done:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, paced_receive, closing_send)
