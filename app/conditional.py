"""Conditional GET for JSON bodies: a strong ``ETag`` of the exact bytes, and 304 for ``If-None-Match``.

Clients poll jobs in a loop and most polls see no change. The tag is a hash of the body itself,
not of a version column, so it cannot go stale whichever writer (worker, reconciler, cancel)
changed the row: the row is still read, but an unchanged answer is not sent again.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request, Response

JSON = "application/json"
# Per-tenant answers that change as the job runs: caches may keep them but must ask again each time.
CACHE_CONTROL = "private, no-cache"
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: the ETag sent in If-None-Match is still current"}
}
# The polled routes read If-None-Match from the request (:func:`if_none_match`) instead of declaring
# a Header parameter FastAPI would look up and validate on every poll; their OpenAPI operations
# declare it with this (``openapi_extra``), as FastAPI did for the parameter.
IF_NONE_MATCH_PARAMETER: dict[str, Any] = {
    "name": "if-none-match",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "title": "If-None-Match"},
}


def if_none_match(request: Request) -> str | None:
    """The request's If-None-Match header (the first, if sent more than once, as FastAPI's ``Header``)."""
    return request.headers.get("if-none-match")


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: ``*`` or any listed tag equal to ``etag``, compared weakly (``W/`` ignored)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def json_or_not_modified(body: bytes, if_none_match: str | None, status_code: int = 200) -> Response:
    """``body`` as JSON with its ETag, or an empty 304 when the client already holds those bytes."""
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, status_code=status_code, media_type=JSON, headers=headers)
