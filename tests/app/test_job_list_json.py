"""GET /v1/jobs reads a page in one query on PostgreSQL, splices each job's JSON columns into the
page as JSON bytes, and keeps rows and jobs' JSON by their values (app.services.job_reads.ListedJob,
app.schemas.jobs.job_page_json): every page must still be the bytes ``JobPage.model_dump_json``
writes for the ORM rows as they are now, on both databases."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.schemas.jobs import JobPage, _listed_job_json, job_out, job_page_json
from app.services.job_reads import KEPT_JSON, JobRecord, ListedJob, _listed, _listed_row, _stored_json
from core.db.models import Artifact, Job
from core.db.types import utcnow
from tests.app.factories import finished_job, job_body, uploaded_mnist
from tests.app.test_polling import statements

# Text in the columns that are not spliced, shaped like the members the page is split at.
MARKERS = ',"spec":0,"metrics":0,"result":0,"mlflow":0,'


@pytest.fixture
def client(make_client: Callable[..., Any], make_settings: Any, db_url: str) -> TestClient:
    return make_client(make_settings(database_url=db_url, tenant_max_concurrent_jobs=50))


def _orm_page(client: TestClient, ids: list[str], next_cursor: str | None) -> bytes:
    app: Any = client.app
    with app.state.session_factory() as session:
        items = [job_out(session.get(Job, i)) for i in ids]  # type: ignore[arg-type]
    return JobPage(items=items, next_cursor=next_cursor).model_dump_json().encode()


def _finished(client: TestClient, model_id: str, n: int, **columns: Any) -> list[str]:
    """``n`` finished jobs, the newest last, each with two artifacts (listed by name) and ``columns``."""
    app: Any = client.app
    ids = []
    with app.state.session_factory() as session:
        for i in range(n):
            job = finished_job(
                session,
                app.state.storage,
                model_id,
                {"z.onnx": (b"onnx", "application/onnx"), "a.json": (b"{}", "application/json")},
                status="failed" if i % 2 else "succeeded",
            )
            for name, value in columns.items():
                setattr(job, name, value)
            job.created_at = utcnow() + timedelta(seconds=i + 1)  # a clear order whatever the clock
            ids.append(job.id)
        session.commit()
    return ids


def test_every_page_of_a_listing_is_the_bytes_job_page_writes(client: TestClient) -> None:
    model_id = uploaded_mnist(client)
    queued = [client.post("/v1/jobs", json=job_body(model_id)).json()["id"] for _ in range(2)]
    finished = _finished(
        client,
        model_id,
        5,
        metrics={"after": {"accuracy": 0.987654321, "size": 2**60, "note": "ü ✓", "none": {}}},
        result={"files": [], "x": None},
        mlflow={"experiment": "e"},
    )
    newest_first = [*reversed(finished), *reversed(queued)]
    cursor, seen = None, []
    while True:
        page = client.get("/v1/jobs", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200
        cursor = page.json()["next_cursor"]
        ids = [j["id"] for j in page.json()["items"]]
        assert page.content == _orm_page(client, ids, cursor)
        seen += ids
        if cursor is None:
            break
    assert seen == newest_first
    failed = client.get("/v1/jobs", params={"status": ["failed", "queued"]})
    expected = [i for i in newest_first if i in finished[1::2] or i in queued]
    assert failed.content == _orm_page(client, expected, None)
    assert [a["name"] for a in failed.json()["items"][0]["artifacts"]] == ["a.json", "z.onnx"]


def test_text_shaped_like_the_splice_points_is_written_as_text(client: TestClient) -> None:
    model_id = uploaded_mnist(client)
    webhook = {"url": "https://example.com/" + MARKERS, "events": [MARKERS], "secret": "whsec_x"}
    ids = _finished(
        client,
        model_id,
        2,
        error_type=MARKERS,
        error_message=MARKERS + '\\",' + MARKERS,
        stage="finetune",
        spec={"config_list": [{MARKERS: MARKERS}], "spec": 0},
        metrics={"metrics": 0, "result": 0, MARKERS: [MARKERS]},
        result=None,
        webhook=webhook,
        mlflow={"mlflow": 0},
    )
    page = client.get("/v1/jobs")
    assert page.content == _orm_page(client, list(reversed(ids)), None)
    assert page.json()["items"][0]["error"]["message"] == MARKERS + '\\",' + MARKERS


def test_a_page_with_its_artifacts_is_one_query_on_postgresql(client: TestClient, db_url: str) -> None:
    model_id = uploaded_mnist(client)
    _finished(client, model_id, 3)
    client.post("/v1/jobs", json=job_body(model_id))
    with statements(client) as seen:
        assert len(client.get("/v1/jobs").json()["items"]) == 4
    reads = [s for s in seen if "FROM jobs" in s or "FROM artifacts" in s]
    # SQLite: the page, then its artifacts (its JSON columns read by SQLAlchemy's type).
    assert len(reads) == (1 if db_url.startswith("postgresql") else 2), reads


def test_a_listed_job_has_the_fields_of_a_job_record() -> None:
    assert ListedJob._fields == JobRecord._fields


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ('{"b": [1, 2.5, 1e-07], "a": "\\u00fc", "n": null}', b'{"b":[1,2.5,1e-7],"a":"\xc3\xbc","n":null}'),
        ('{"big": 123456789012345678901234567890}', b'{"big":123456789012345678901234567890}'),
        ("[NaN, Infinity]", b"[null,null]"),
        ("{}", b"{}"),
    ],
)
def test_a_stored_json_text_is_written_as_the_api_writes_its_value(text: str, written: bytes) -> None:
    assert _stored_json(text) == written


def test_a_page_read_again_after_a_change_shows_the_change(client: TestClient) -> None:
    # The rows and the jobs' JSON are kept by their values (app.services.job_reads._listed_row,
    # app.schemas.jobs._listed_job_json): whatever changes, the next page is the new rows'.
    model_id = uploaded_mnist(client)
    [job_id] = _finished(client, model_id, 1, progress=0.0, metrics={"a": 1})
    assert client.get("/v1/jobs").content == _orm_page(client, [job_id], None)
    app: Any = client.app
    changes: list[dict[str, Any]] = [
        {"progress": 50.0, "stage": "finetune"},
        {"metrics": {"a": 2}, "webhook": {"url": "https://example.com/h", "events": ["failed"]}},
        {"finished_at": utcnow() + timedelta(hours=1)},
    ]
    for change in changes:
        with app.state.session_factory() as session:
            job = session.get(Job, job_id)
            for name, value in change.items():
                setattr(job, name, value)
            session.commit()
        assert client.get("/v1/jobs").content == _orm_page(client, [job_id], None), change
    with app.state.session_factory() as session:
        other = finished_job(session, app.state.storage, model_id, {}).id  # another job, older
        session.execute(
            Artifact.__table__.insert().values(
                job_id=job_id, name="b.txt", sha256="0" * 64, size_bytes=1, media_type="text/plain",
                storage_key="k",
            )
        )  # fmt: skip
        session.commit()
    page = client.get("/v1/jobs")
    assert page.content == _orm_page(client, [job_id, other], None)
    assert [a["name"] for a in page.json()["items"][0]["artifacts"]] == ["a.json", "b.txt", "z.onnx"]


def test_jobs_equal_but_for_the_sign_of_a_zero_progress_are_written_apart() -> None:
    # 0.0 == -0.0, so equal rows (and listed jobs) could share their JSON but for the key's sign.
    at = utcnow()
    row = ("0" * 32, "queued", None, 0.0, "m", "{}", "cpu", "cpu", None, None, None, None, 0, 3, False,
           None, None, at, None, None, at, None)  # fmt: skip
    zero, negative = _listed(row), _listed((*row[:3], -0.0, *row[4:]))
    assert (zero.progress, str(negative.progress)) == (0.0, "-0.0")
    assert b'"progress":0.0,' in job_page_json([zero], None)
    assert b'"progress":-0.0,' in job_page_json([negative], None)


@pytest.mark.parametrize("big", ["spec", "error_message"])
def test_a_job_with_more_text_than_is_kept_is_listed_afresh(client: TestClient, big: str) -> None:
    values = {
        "spec": {"config_list": [{"op_names": ["layer" * 20] * 200, "sparse_ratio": 0.5}]},
        "error_message": "Traceback: " + "x" * KEPT_JSON,
    }
    assert len(json.dumps(values[big])) > KEPT_JSON
    [job_id] = _finished(client, uploaded_mnist(client), 1, **{big: values[big]})
    _listed_row.cache_clear()
    _listed_job_json.cache_clear()
    for _ in range(2):
        assert client.get("/v1/jobs").content == _orm_page(client, [job_id], None)
    assert _listed_row.cache_info().currsize == _listed_job_json.cache_info().currsize == 0
