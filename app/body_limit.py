"""Request body limits that answer with a 413 problem (Starlette's own limiter answers in plain text).

``limit_for`` gives the limit of a request, or None for a route that limits its own stream (the
model upload: ``receive_form`` enforces ``max_upload_bytes`` on the file part as it arrives).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.problems import problem_response

# Job specs and preflight requests are small; a config_list naming every layer of a big model is ~100 kB.
MAX_JSON_BODY_BYTES = 4 * 1024 * 1024


class BodyLimitMiddleware:
    """Refuses a declared Content-Length over the limit at once, and a streamed body once it passes it."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int | None]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = problem_response(
                Request(scope),
                status=413,
                code="request_too_large",
                title="Request body too large",
                detail=f"the request body of {int(declared)} bytes exceeds the limit of {limit} bytes",
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # raised inside the route; the problem handler answers it
                raise HTTPException(413, f"the request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)
