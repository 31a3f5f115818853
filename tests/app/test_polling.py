"""The polled reads (GET /v1/jobs/{id}, GET /v1/jobs): conditional GET, one query per poll, the
principal cache, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.auth.cache import TtlCache
from app.conditional import etag_matches
from tests.app.factories import job_body, uploaded_mnist
from tests.conftest import bearer


@pytest.fixture
def client(make_client: Callable[..., Any], make_settings: Any, db_url: str) -> TestClient:
    return make_client(make_settings(database_url=db_url))


@contextmanager
def statements(client: TestClient) -> Iterator[list[str]]:
    """The SQL statements the app's engines (writes, and the polled reads' own on PostgreSQL) run
    inside the block."""
    seen: list[str] = []
    state = client.app.state  # type: ignore[attr-defined]
    engines = {id(e): e for e in (state.engine, state.read_engine)}.values()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def test_a_poll_that_sees_no_change_is_304_and_a_change_is_200(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=job_body(uploaded_mnist(client))).json()
    first = client.get(f"/v1/jobs/{job['id']}")
    etag = first.headers["etag"]
    assert first.status_code == 200 and first.json() == job
    assert etag.startswith('"') and first.headers["cache-control"] == "private, no-cache"
    same = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", etag)
    assert client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": '"stale"'}).status_code == 200
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    changed = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["status"] == "cancelled"
    assert changed.headers["etag"] != etag


def test_the_job_list_is_conditional_too(client: TestClient) -> None:
    model_id = uploaded_mnist(client)
    client.post("/v1/jobs", json=job_body(model_id))
    page = client.get("/v1/jobs")
    assert client.get("/v1/jobs", headers={"If-None-Match": page.headers["etag"]}).status_code == 304
    client.post("/v1/jobs", json=job_body(model_id))
    again = client.get("/v1/jobs", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 200 and len(again.json()["items"]) == 2


def test_an_etag_does_not_open_another_tenants_job(
    make_client: Callable[..., Any], make_settings: Any, db_url: str, make_api_key: Callable[..., str]
) -> None:
    settings = make_settings(database_url=db_url, require_api_keys=True)
    alice, bob = make_client(settings), make_client(settings)
    alice.headers.update(bearer(make_api_key(settings, "alice")))
    bob.headers.update(bearer(make_api_key(settings, "bob")))
    job = alice.post("/v1/jobs", json=job_body(uploaded_mnist(alice))).json()
    etag = alice.get(f"/v1/jobs/{job['id']}").headers["etag"]
    for headers in ({}, {"If-None-Match": etag}, {"If-None-Match": "*"}):
        refused = bob.get(f"/v1/jobs/{job['id']}", headers=headers)
        assert refused.status_code == 404 and "etag" not in refused.headers


def test_a_poll_with_a_cached_principal_is_one_query(
    make_client: Callable[..., Any], make_settings: Any, db_url: str, make_api_key: Callable[..., str]
) -> None:
    settings = make_settings(database_url=db_url, require_api_keys=True)
    client = make_client(settings)
    client.headers.update(bearer(make_api_key(settings, "alice")))
    job = client.post("/v1/jobs", json=job_body(uploaded_mnist(client))).json()
    with statements(client) as seen:
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) == 1, seen
    client.app.state.principal_cache.clear()  # type: ignore[attr-defined]
    with statements(client) as seen:
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
    # The key with its tenant (one join), then the job with its artifacts (one join).
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) == 2, seen


def test_the_principal_cache_expires_entries_and_keeps_a_bound() -> None:
    now = [0.0]
    cache: TtlCache[str] = TtlCache(ttl=5.0, max_entries=2, clock=lambda: now[0])
    cache.put("a", "A")
    cache.put("b", "B")
    now[0] = 4.9
    assert (cache.get("a"), cache.get("b")) == ("A", "B")
    cache.put("c", "C")  # over the bound: the oldest stored ("a") goes
    assert (cache.get("a"), cache.get("c"), len(cache)) == (None, "C", 2)
    now[0] = 5.0
    assert cache.get("b") is None and cache.get("c") == "C"  # "b" lived its 5 s, "c" was stored at 4.9
    off: TtlCache[str] = TtlCache(ttl=0)
    off.put("a", "A")
    assert off.get("a") is None and len(off) == 0


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        ('"t"', True),
        ('W/"t"', True),
        ('"u", "t"', True),
        ("*", True),
        ('"u"', False),
    ],
)
def test_if_none_match_is_compared_weakly(header: str | None, matches: bool) -> None:
    assert etag_matches(header, '"t"') is matches
