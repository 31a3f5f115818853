"""Per-tenant request rate limits: a token bucket of ``per_minute`` tokens refilled at ``per_minute/60``/s.

Embedded mode keeps the buckets in memory (one process). With a Redis broker the bucket lives in
Redis and is updated by one Lua script, so several API processes share a tenant's budget and two
concurrent requests cannot both spend the last token.

A round trip to Redis per request was the largest cost of a cached job poll (it blocked the event
loop too), so an API process takes tokens in small batches and spends them locally: a tenant
allowed at least 1,200 requests a minute gets up to a tenth of a second's refill per trip (at most
:data:`MAX_BATCH`), a lower limit one token per request exactly as before. The shared budget stays
exact: the script grants only tokens the bucket holds, and tokens handed out beyond the one spent at
once count against the bucket's capacity until their lease (:data:`LEASE_SECONDS`) ends, so what
Redis holds plus what the processes hold never exceeds one bucket. Unspent tokens lapse with their
lease, which can only refuse a little early, never allow more. A refusal is remembered locally
until the moment the bucket can next hold a token (no process can add tokens sooner), so a client
hammering past its limit costs no round trips either.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

# How long a process may hold tokens it took from Redis but has not spent yet.
LEASE_SECONDS = 1.0
# The most tokens one round trip takes: at 64, Redis costs a poll 1/64 of a round trip.
MAX_BATCH = 64
# Local entries (leases, refusals) kept before the expired ones are swept.
MAX_LOCAL_ENTRIES = 4096

# Atomic take of up to ARGV[2] tokens: refill by elapsed server time (TIME, so API hosts' clocks do not
# matter), then grant what the bucket holds. 'out' counts tokens granted beyond the one spent at once
# (held by processes until 'out_until'); the refill stops at capacity - out, so tokens here plus tokens
# held never exceed one bucket. Returns {granted, seconds until a token is available if none was}.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = capacity / 60.0
local want = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'out', 'out_until')
local tokens = tonumber(b[1]) or capacity
local at = tonumber(b[2]) or now
local out = tonumber(b[3]) or 0
local out_until = tonumber(b[4]) or 0
if now >= out_until then out = 0 end
tokens = math.min(math.max(0, capacity - out), tokens + math.max(0, now - at) * rate)
local granted = math.min(want, math.floor(tokens))
local wait = 0
if granted >= 1 then
  tokens = tokens - granted
  if granted > 1 then
    out = out + granted - 1
    out_until = now + lease
  end
else
  granted = 0
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now),
  'out', tostring(out), 'out_until', tostring(out_until))
redis.call('EXPIRE', KEYS[1], 120)
return {granted, tostring(wait)}
"""


class RateLimiter(Protocol):
    def take(self, key: str, per_minute: int) -> float:
        """Spends one token; returns 0 when allowed, else the seconds until a token is available."""

    def take_local(self, key: str, per_minute: int) -> float | None:
        """:meth:`take` answered without I/O, or None when only the shared store can answer."""


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

    def take_local(self, key: str, per_minute: int) -> float | None:
        return self.take(key, per_minute)


def batch_size(per_minute: int) -> int:
    """Tokens one round trip asks for: a tenth of a second's refill, 1 below 1,200/min, at most MAX_BATCH."""
    return max(1, min(MAX_BATCH, per_minute // 600))


@dataclass
class _Local:
    """Tokens taken from Redis (or a refusal) that this process answers from until ``until``."""

    per_minute: int  # a changed limit (the tenant's principal was reloaded) voids the entry
    until: float
    tokens: int = 0  # 0: a refusal, valid until ``until``


class RedisRateLimiter:
    def __init__(
        self,
        url: str,
        namespace: str = "nncompress:ratelimit:",
        *,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis

        self.client: Any = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.script: Any = self.client.register_script(_TAKE)
        self.namespace = namespace
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._local: dict[str, _Local] = {}
        self._lock = threading.Lock()

    def take_local(self, key: str, per_minute: int) -> float | None:
        now = self.clock()
        with self._lock:
            entry = self._local.get(key)
            if entry is None or entry.per_minute != per_minute or now >= entry.until:
                return None
            if entry.tokens == 0:
                return entry.until - now
            entry.tokens -= 1
            if entry.tokens == 0:  # spent: the next request asks Redis (not a refusal)
                del self._local[key]
            return 0.0

    def take(self, key: str, per_minute: int) -> float:
        wait = self.take_local(key, per_minute)
        if wait is not None:
            return wait
        # The lease is timed from before the request: it ends no later than Redis counts it held.
        now = self.clock()
        try:
            granted, raw_wait = self.script(
                keys=[self.namespace + key], args=[per_minute, batch_size(per_minute), self.lease_seconds]
            )
        except Exception:
            # Redis down: serve rather than refuse everyone; /readyz already reports the broker.
            log.warning("rate limiter: Redis unreachable; request allowed", exc_info=True)
            return 0.0
        granted, wait = int(granted), float(raw_wait)
        with self._lock:
            if len(self._local) >= MAX_LOCAL_ENTRIES:
                self._local = {k: e for k, e in self._local.items() if e.until > now}
            if granted > 1:
                self._local[key] = _Local(per_minute, now + self.lease_seconds, granted - 1)
            elif granted == 0:
                # No process can add tokens: none exists before the refill makes one.
                self._local[key] = _Local(per_minute, now + wait)
            else:
                self._local.pop(key, None)
        return 0.0 if granted else wait


def make_rate_limiter(broker_url: str | None) -> RateLimiter:
    if broker_url and broker_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisRateLimiter(broker_url)
    return MemoryRateLimiter()


def retry_after(wait_seconds: float) -> str:
    """The ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_seconds)))
