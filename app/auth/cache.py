"""A short-lived, bounded, per-process cache of resolved principals.

Resolving an API key costs a database round trip (key row, tenant row, limits); a client that polls
a job sends the same key many times a second. Entries live ``ttl`` seconds, so revoking a key, or
changing a tenant's limits, takes effect in every API process within ``ttl`` seconds even though
revocation happens elsewhere (``nncompress keys revoke`` writes the database only). Entries are
keyed by the key's HMAC, not the key, so the cache holds no secret; a key that failed is not
cached (every bad key costs its lookup, as before).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# Revocation reaches every API process within this many seconds (settings.principal_cache_seconds).
DEFAULT_TTL_SECONDS = 5.0
DEFAULT_MAX_ENTRIES = 4096


class TtlCache(Generic[T]):
    """At most ``max_entries`` values, each served for ``ttl`` seconds after it was stored.

    ``ttl`` 0 turns the cache off (every ``get`` misses). Thread-safe: sync routes run in a pool.
    """

    def __init__(
        self,
        ttl: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError(f"ttl must be ≥ 0 and max_entries ≥ 1, got {ttl} and {max_entries}")
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> T | None:
        if self.ttl == 0:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self.clock() >= entry[0]:
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: str, value: T) -> None:
        if self.ttl == 0:
            return
        with self._lock:
            self._entries[key] = (self.clock() + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:  # the oldest stored goes first
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
