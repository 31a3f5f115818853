"""The Redis rate limiter takes tokens in batches and still never lets a tenant past its bucket.

These run against the Redis on 127.0.0.1:6379 (a namespace of their own per test), like the API's
shared-budget test in test_tenancy.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.auth.ratelimit import LEASE_SECONDS, MAX_BATCH, RedisRateLimiter, batch_size

pytestmark = pytest.mark.service
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def make_limiter() -> Iterator[Callable[..., RedisRateLimiter]]:
    """Limiters on one namespace, as API processes sharing a Redis would be; the keys go afterwards."""
    namespace = f"nncompress:test-ratelimit:{uuid.uuid4().hex}:"
    made: list[RedisRateLimiter] = []

    def make(**kwargs: Any) -> RedisRateLimiter:
        limiter = RedisRateLimiter(REDIS_URL, namespace, **kwargs)
        made.append(limiter)
        return limiter

    yield make
    if made:
        keys = made[0].client.keys(namespace + "*")
        if keys:
            made[0].client.delete(*keys)
    for limiter in made:
        limiter.client.close()


def count_round_trips(limiter: RedisRateLimiter) -> list[int]:
    calls = [0]
    script = limiter.script

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return script(*args, **kwargs)

    limiter.script = counted
    return calls


def test_batch_size_is_a_tenth_of_a_seconds_refill_and_one_for_low_limits() -> None:
    assert [batch_size(n) for n in (1, 5, 600, 1199, 1200, 6000, 10**8)] == [1, 1, 1, 1, 2, 10, MAX_BATCH]


def test_a_low_limit_429s_at_its_count_across_two_processes(
    make_limiter: Callable[..., RedisRateLimiter],
) -> None:
    first, second = make_limiter(), make_limiter()
    waits = [(first, second)[i % 2].take("tenant", 5) for i in range(5)]
    assert waits == [0.0] * 5
    refused = second.take("tenant", 5)
    assert 0 < refused <= 12  # one token per 12 s at 5/min
    assert 0 < first.take("tenant", 5) <= 12


def test_a_refusal_is_answered_locally_until_a_token_can_exist(
    make_limiter: Callable[..., RedisRateLimiter],
) -> None:
    now = [100.0]
    limiter = make_limiter(clock=lambda: now[0])
    trips = count_round_trips(limiter)
    assert limiter.take("tenant", 1) == 0.0
    wait = limiter.take("tenant", 1)
    assert 0 < wait <= 60 and trips[0] == 2
    now[0] += wait / 2
    assert limiter.take_local("tenant", 1) == pytest.approx(wait / 2)  # no round trip
    assert trips[0] == 2
    now[0] += wait
    assert limiter.take_local("tenant", 1) is None  # past the refill: Redis must answer again


def test_a_high_limit_takes_tokens_in_batches(make_limiter: Callable[..., RedisRateLimiter]) -> None:
    limiter = make_limiter()
    trips = count_round_trips(limiter)
    assert all(limiter.take("tenant", 10**6) == 0.0 for _ in range(10 * MAX_BATCH))
    assert trips[0] <= 11  # 10 batches, give or take a lapsed lease on a slow machine


def test_held_tokens_lapse_with_their_lease_and_a_changed_limit_voids_them(
    make_limiter: Callable[..., RedisRateLimiter],
) -> None:
    now = [100.0]
    limiter = make_limiter(clock=lambda: now[0])
    assert limiter.take("tenant", 6000) == 0.0  # a batch of 10: 9 held
    assert limiter.take_local("tenant", 6000) == 0.0
    assert limiter.take_local("tenant", 60) is None  # the tenant's limit changed
    assert limiter.take_local("tenant", 6000) == 0.0
    now[0] += LEASE_SECONDS
    assert limiter.take_local("tenant", 6000) is None


def test_two_limiters_together_never_grant_more_than_the_bucket(
    make_limiter: Callable[..., RedisRateLimiter],
) -> None:
    per_minute = 1800  # batches of 3; refills 30 tokens/s
    limiters = [make_limiter(), make_limiter()]
    allowed = [0] * 4
    refused = [0] * 4
    start = time.monotonic()

    def client(index: int) -> None:
        limiter = limiters[index % 2]
        while refused[index] < 50:  # well past the bucket: hammer on while it refills
            if limiter.take("tenant", per_minute) == 0.0:
                allowed[index] += 1
            else:
                refused[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    # A token bucket admits at most its capacity plus the refill over the time it was used.
    assert per_minute - 2 * batch_size(per_minute) <= sum(allowed) <= per_minute + elapsed * per_minute / 60


def test_tokens_held_by_a_process_count_against_the_bucket_while_it_refills(
    make_limiter: Callable[..., RedisRateLimiter],
) -> None:
    first, second = make_limiter(), make_limiter()
    key = first.namespace + "tenant"
    assert first.take("tenant", 1200) == 0.0  # a batch of 2: one spent, one held by `first`
    tokens, out = (float(v) for v in first.client.hmget(key, "tokens", "out"))
    assert (round(tokens), out) == (1198, 1.0)
    # The bucket refills (its clock turned back a minute) while `first` still holds its token (its
    # lease stretched, for a slow machine): the refill stops one short of the capacity.
    at, until = (float(v) for v in first.client.hmget(key, "at", "out_until"))
    first.client.hset(key, mapping={"at": str(at - 60), "out_until": str(until + 60)})
    assert second.take("tenant", 1200) == 0.0  # another batch of 2
    tokens, out = (float(v) for v in first.client.hmget(key, "tokens", "out"))
    assert (tokens, out) == (1197.0, 2.0)  # 1199 - 2; held: one by each process
