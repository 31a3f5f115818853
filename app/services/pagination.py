"""Opaque cursors for keyset pagination on ``(created_at, id)``."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from app.db.types import is_id
from app.errors import InvalidCursor


def encode_cursor(created_at: datetime, id: str) -> str:
    raw = json.dumps([created_at.isoformat(), id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, id = json.loads(raw)
        parsed = datetime.fromisoformat(at)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursor(f"cursor {cursor!r} was not issued by this API") from exc
    if parsed.tzinfo is None or not isinstance(id, str) or not is_id(id):
        raise InvalidCursor(f"cursor {cursor!r} was not issued by this API")
    return parsed, id
