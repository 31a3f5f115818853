"""Fails (exit 1) unless the PostgreSQL and Redis that the service tests use answer.

The service tests must run against real servers; a missing server is a broken
environment, never a reason to skip.
"""

from __future__ import annotations

import os
import sys

import psycopg
import redis


def main() -> int:
    pg_url = os.environ.get("NNCOMPRESS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    redis_url = os.environ.get("NNCOMPRESS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    failures: list[str] = []
    try:
        with psycopg.connect(pg_url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means the suite cannot run
        failures.append(f"PostgreSQL at {pg_url}: {exc}")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=5).ping()
    except Exception as exc:
        failures.append(f"Redis at {redis_url}: {exc}")
    for failure in failures:
        print(f"service check failed: {failure}", file=sys.stderr)
    if not failures:
        print("service check: PostgreSQL and Redis answer")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
