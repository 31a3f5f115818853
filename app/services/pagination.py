"""Opaque cursors for keyset pagination on ``(created_at, id)``.

A cursor reads ``<created_at in microseconds since the epoch, hex>.<row id>``. Clients treat it as
opaque; the form is chosen so that every string matching :data:`CURSOR_PATTERN` (what OpenAPI
declares) names a valid position: a well-formed request is never refused for its cursor, and a
cursor that matches no row simply starts the page there.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from core.errors import InvalidCursor

# 14 hex digits of microseconds reach the year 4253, well inside what datetime holds.
CURSOR_PATTERN = r"^[0-9a-f]{1,14}\.[0-9a-f]{32}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def encode_cursor(created_at: datetime, id: str) -> str:
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{max(micros, 0):x}.{id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    if _CURSOR.fullmatch(cursor) is None:  # the route's pattern refuses these first (422)
        raise InvalidCursor(f"cursor {cursor[:80]!r} was not issued by this API")
    micros, id = cursor.split(".")
    return _EPOCH + timedelta(microseconds=int(micros, 16)), id
