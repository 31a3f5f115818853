"""The polled routes write a job's JSON without building JobOut (app.schemas.jobs.job_json) and read
it without SQLAlchemy's rows on PostgreSQL (app.services.job_reads): the bytes must stay the ones
``job_out(job).model_dump_json()`` writes for the ORM row, on both databases."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.schemas.jobs import JobOut, JobPage, job_dict, job_out
from app.services.job_reads import _JOB_COLUMNS, JobRecord
from core.db.models import Job
from core.db.session import _loads
from core.db.types import utcnow
from tests.app.factories import finished_job, job_body, uploaded_mnist
from tests.app.test_polling_reconnect import _terminate_other_sessions

# Values the serialisers could write differently: unicode, floats, nesting, empty containers, big ints.
METRICS = {
    "before": {"params": 431080, "latency_ms": {"1": 0.123456789, "64": 12.5}, "accuracy": 0.9876},
    "after": {"params": 2**53 + 1, "latency_ms": {}, "accuracy": 1.0, "note": 'größe ✓ "q" \\ \n'},
}


@pytest.fixture
def client(make_client: Callable[..., Any], make_settings: Any, db_url: str) -> TestClient:
    return make_client(make_settings(database_url=db_url))


def _jobs(client: TestClient) -> list[str]:
    """Three jobs: queued as submitted, failed with an error, succeeded with everything filled in."""
    model_id = uploaded_mnist(client)
    queued = client.post("/v1/jobs", json=job_body(model_id)).json()["id"]
    app: Any = client.app
    with app.state.session_factory() as session:
        failed = finished_job(session, app.state.storage, model_id, {}, status="failed")
        failed.error_type, failed.error_message = "oom", "ran out of memory: ünïcödé"
        failed.attempt, failed.stage = 2, "finetune"
        done = finished_job(
            session,
            app.state.storage,
            model_id,
            {"model.onnx": (b"onnx", "application/onnx"), "report.json": (b"{}", "application/json")},
        )
        done.metrics, done.result, done.progress = METRICS, {"sparsity": 0.5, "files": [], "x": None}, 100
        done.webhook = {"url": "https://example.com/hook", "events": ["succeeded"], "secret": "whsec_x"}
        done.mlflow = {"experiment": "e", "registered_model": "m"}
        done.cancel_requested = True
        done.created_at = utcnow() + timedelta(seconds=1)  # newest first, whatever the clock's resolution
        session.commit()
        return [queued, failed.id, done.id]


def _orm_json(client: TestClient, job_id: str) -> bytes:
    app: Any = client.app
    with app.state.session_factory() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job_out(job).model_dump_json().encode()


def test_a_polled_job_is_the_bytes_job_out_writes(client: TestClient) -> None:
    for job_id in _jobs(client):
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200
        assert response.content == _orm_json(client, job_id)


def test_a_page_is_the_bytes_job_page_writes(client: TestClient) -> None:
    ids = _jobs(client)
    app: Any = client.app
    with app.state.session_factory() as session:
        orm = [job_out(session.get(Job, i)) for i in reversed(ids)]  # type: ignore[arg-type]
    page = client.get("/v1/jobs")
    assert page.content == JobPage(items=orm, next_cursor=None).model_dump_json().encode()
    # A page that ends early carries its cursor, and the next page goes on from it.
    first = client.get("/v1/jobs", params={"limit": 2})
    cursor = first.json()["next_cursor"]
    assert first.content == JobPage(items=orm[:2], next_cursor=cursor).model_dump_json().encode()
    rest = client.get("/v1/jobs", params={"limit": 2, "cursor": cursor})
    assert rest.content == JobPage(items=orm[2:], next_cursor=None).model_dump_json().encode()
    failed = client.get("/v1/jobs", params={"status": ["failed", "cancelled"]})
    assert failed.content == JobPage(items=[orm[1]], next_cursor=None).model_dump_json().encode()


def test_the_job_dict_follows_the_models_fields() -> None:
    assert list(JobRecord._fields) == [c.name for c in _JOB_COLUMNS] + ["artifacts"]
    job = Job(
        id="0" * 32,
        status="queued",
        stage=None,
        progress=0,
        model_id="m",
        spec={},
        device="cpu",
        queue="cpu",
        error_type=None,
        error_message=None,
        metrics=None,
        result=None,
        attempt=0,
        max_attempts=3,
        cancel_requested=False,
        webhook=None,
        mlflow=None,
        created_at=utcnow(),
        started_at=None,
        finished_at=None,
        updated_at=utcnow(),
    )
    assert list(job_dict(job)) == list(JobOut.model_fields)


def test_a_driver_read_on_a_connection_postgresql_dropped_is_answered(
    make_client: Callable[..., Any], make_settings: Any, pg_url: str
) -> None:
    # No engine listeners here (tests/app/test_polling_reconnect.py records errors with one, which
    # sends the reads through SQLAlchemy): the reads go to psycopg directly, then find the lost
    # connection and are run again.
    client = make_client(make_settings(database_url=pg_url))
    job = client.post("/v1/jobs", json=job_body(uploaded_mnist(client))).json()
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200  # the read pool now keeps a connection
    app: Any = client.app
    assert not app.state.read_engine._has_events
    _terminate_other_sessions(pg_url)
    poll = client.get(f"/v1/jobs/{job['id']}")
    assert poll.status_code == 200 and poll.json() == job
    _terminate_other_sessions(pg_url)
    page = client.get("/v1/jobs")
    assert page.status_code == 200 and [j["id"] for j in page.json()["items"]] == [job["id"]]


def test_the_poll_reads_its_parameters_itself_as_fastapi_did(
    make_client: Callable[..., Any], make_settings: Any
) -> None:
    # GET /v1/jobs[/{id}] read If-None-Match and the job id from the request (app.routes.jobs): the
    # answers and the OpenAPI document are those of the Path(max_length=64) and Header they replace.
    client = make_client(make_settings())
    too_long = client.get("/v1/jobs/" + "a" * 65, headers={"If-None-Match": "*"})
    assert too_long.status_code == 422
    assert too_long.json()["errors"] == [
        {
            "loc": ["path", "job_id"],
            "message": "String should have at most 64 characters",
            "code": "string_too_long",
        }
    ]
    assert client.get("/v1/jobs/" + "a" * 64).status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    header = {
        "name": "if-none-match",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "title": "If-None-Match"},
    }
    assert paths["/v1/jobs/{job_id}"]["get"]["parameters"] == [
        {
            "name": "job_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "maxLength": 64, "title": "Job Id"},
        },
        header,
    ]
    assert paths["/v1/jobs"]["get"]["parameters"][-1] == header
    assert "422" in paths["/v1/jobs/{job_id}"]["get"]["responses"]


@pytest.mark.parametrize(
    "document",
    [
        '{"a": [1, 2.5, -0.0, 1e-07, 1.7976931348623157e+308, "\\u00fc\\n"], "b": null, "c": {}}',
        '{"big": 123456789012345678901234567890, "neg": -9223372036854775809, "t": true}',
        '{"a": 1, "a": 2}',
        "[NaN, Infinity, -Infinity]",
        '"\\ud800 lone surrogate"',  # refused by pydantic's parser: read by json.loads
    ],
)
def test_the_read_engines_json_parser_reads_what_json_loads_reads(document: str) -> None:
    # The polled reads parse json columns with core.db.session._loads (app/services/job_reads.py).
    assert json.dumps(_loads(document.encode())) == json.dumps(json.loads(document))
