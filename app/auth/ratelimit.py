"""Per-tenant request rate limits: a token bucket of ``per_minute`` tokens refilled at ``per_minute/60``/s.

Embedded mode keeps the buckets in memory (one process). With a Redis broker the bucket lives in
Redis and is updated by one Lua script, so several API processes share a tenant's budget and two
concurrent requests cannot both spend the last token.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Atomic take: refill by elapsed server time (TIME, so API hosts' clocks do not matter), then spend one.
_TAKE = """
local rate = tonumber(ARGV[1]) / 60.0
local capacity = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or capacity
local at = tonumber(b[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return tostring(wait)
"""


class RateLimiter(Protocol):
    def take(self, key: str, per_minute: int) -> float:
        """Spends one token; returns 0 when allowed, else the seconds until a token is available."""


class MemoryRateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, per_minute: int) -> float:
        rate = per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - at) * rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / rate


class RedisRateLimiter:
    def __init__(self, url: str, namespace: str = "nncompress:ratelimit:") -> None:
        import redis

        self.client: Any = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.script = self.client.register_script(_TAKE)
        self.namespace = namespace

    def take(self, key: str, per_minute: int) -> float:
        try:
            return float(self.script(keys=[self.namespace + key], args=[per_minute]))
        except Exception:
            # Redis down: serve rather than refuse everyone; /readyz already reports the broker.
            log.warning("rate limiter: Redis unreachable; request allowed", exc_info=True)
            return 0.0


def make_rate_limiter(broker_url: str | None) -> RateLimiter:
    if broker_url and broker_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisRateLimiter(broker_url)
    return MemoryRateLimiter()


def retry_after(wait_seconds: float) -> str:
    """The ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_seconds)))
