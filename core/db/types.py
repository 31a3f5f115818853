"""Column types shared by the models."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A fresh 32-hex-digit identifier (uuid4)."""
    return uuid.uuid4().hex


_ID = re.compile(r"[0-9a-f]{32}")


def is_id(value: str) -> bool:
    """Whether ``value`` has the shape :func:`new_id` makes; anything else names no row.

    Checked before a lookup, so a NUL byte or a 10 kB string never reaches the database
    (PostgreSQL refuses NUL in text with an error, not with "no row").
    """
    return _ID.fullmatch(value) is not None


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on PostgreSQL and SQLite alike.

    SQLite stores no offset, so values are converted to UTC before they are written (naive input is
    taken as UTC) and read back with ``tzinfo=UTC``; string comparison in SQL then orders correctly.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
