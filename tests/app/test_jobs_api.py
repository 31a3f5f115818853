"""POST/GET /v1/jobs, events and cancel, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from core.db.models import Job
from nncompress.pipeline import JobSpec
from tests.app.factories import finished_job, job_body, uploaded_mnist

PROBLEM = "application/problem+json"


@pytest.fixture
def client(make_client: Callable[..., Any], make_settings: Any, db_url: str) -> TestClient:
    return make_client(make_settings(database_url=db_url))


def set_status(client: TestClient, job_id: str, **values: Any) -> None:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        session.execute(update(Job).where(Job.id == job_id).values(**values))
        session.commit()


def test_create_job_queues_it_and_enqueues_the_id(client: TestClient) -> None:
    model_id = uploaded_mnist(client)
    response = client.post("/v1/jobs", json=job_body(model_id, device="cuda", options={"latency_runs": 5}))
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["status"], job["progress"], job["queue"], job["attempt"]) == ("queued", 0.0, "gpu", 0)
    assert job["spec"]["input_shape"] == [1, 1, 28, 28] and job["spec"]["speedup"] is True
    assert JobSpec.from_dict(job["spec"]).to_dict() == job["spec"]  # what the worker will run
    assert job["spec"]["latency_runs"] == 5
    assert client.app.state.dispatcher.enqueued == [job["id"]]  # type: ignore[attr-defined]
    assert client.get(f"/v1/jobs/{job['id']}").json() == job
    events = client.get(f"/v1/jobs/{job['id']}/events").json()
    assert [(e["type"], e["status"]) for e in events["items"]] == [("created", "queued")]


@pytest.mark.parametrize(
    ("config_list", "code", "entry", "key"),
    [
        ([{"sparse_ratio": 1.5, "op_types": ["Conv2d"]}], "invalid_config", 0, "sparse_ratio"),
        (
            [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}, {"sparsty": 0.5, "op_types": ["Linear"]}],
            "invalid_config",
            1,
            "sparsty",
        ),
        ([{"sparse_ratio": 0.5, "op_names": ["conv9"]}], "unknown_layer", 0, "op_names"),
    ],
)
def test_bad_config_is_422_naming_entry_and_key(
    client: TestClient, config_list: list[Any], code: str, entry: int, key: str
) -> None:
    model_id = uploaded_mnist(client)
    response = client.post("/v1/jobs", json=job_body(model_id, config_list=config_list))
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == f"urn:nncompress:problem:{code}"
    assert key in problem["detail"] and f"config_list[{entry}]" in problem["detail"]
    (error,) = problem["errors"]
    assert (error["entry"], error["key"]) == (entry, key)
    assert client.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"input_shape": [1, 3, 32, 32]}, 422, "invalid_input_shape"),
        ({"device": "tpu"}, 422, "validation_error"),
        ({"model_id": "f" * 32}, 404, "not_found"),
        ({"surprise": 1}, 422, "validation_error"),
        ({"pruner": "l9norm"}, 422, "invalid_config"),
        ({"options": {"latency_batch_sizes": [0]}}, 422, "invalid_config"),
        ({"options": {"warp_speed": True}}, 422, "invalid_config"),
        ({"options": {"pruner": "fpgm"}}, 422, "invalid_config"),  # not an option: a top-level field
    ],
)
def test_bad_job_requests_are_clear_4xx(
    client: TestClient, overrides: dict[str, Any], status: int, code: str
) -> None:
    response = client.post("/v1/jobs", json={**job_body(uploaded_mnist(client)), **overrides})
    assert response.status_code == status, response.text
    assert response.json()["type"] == f"urn:nncompress:problem:{code}"


def test_malformed_json_is_422_problem(client: TestClient) -> None:
    response = client.post("/v1/jobs", content=b'{"model_id": ', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


def test_unknown_job_ids_are_404_everywhere(client: TestClient) -> None:
    missing = "0" * 32
    for response in (
        client.get(f"/v1/jobs/{missing}"),
        client.get(f"/v1/jobs/{missing}/events"),
        client.post(f"/v1/jobs/{missing}/cancel"),
        client.get(f"/v1/jobs/{missing}/artifacts/model.onnx"),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "urn:nncompress:problem:not_found"


def test_same_idempotency_key_returns_the_same_job(client: TestClient) -> None:
    body = job_body(uploaded_mnist(client))
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    again = client.post(
        "/v1/jobs", json=dict(reversed(list(body.items()))), headers={"Idempotency-Key": "k-1"}
    )
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert client.app.state.dispatcher.enqueued == [first.json()["id"]]  # type: ignore[attr-defined]
    conflict = client.post("/v1/jobs", json={**body, "speedup": False}, headers={"Idempotency-Key": "k-1"})
    assert conflict.status_code == 409
    assert conflict.json()["type"] == "urn:nncompress:problem:idempotency_conflict"
    assert len(client.get("/v1/jobs").json()["items"]) == 1


def test_list_is_newest_first_with_cursor_and_status_filter(client: TestClient) -> None:
    model_id = uploaded_mnist(client)
    ids = [client.post("/v1/jobs", json=job_body(model_id)).json()["id"] for _ in range(5)]
    set_status(client, ids[0], status="failed")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        seen += [job["id"] for job in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and pages == 3
    queued = client.get("/v1/jobs", params={"status": "queued"}).json()["items"]
    assert [j["id"] for j in queued] == list(reversed(ids[1:]))
    both = client.get("/v1/jobs", params=[("status", "failed"), ("status", "queued")]).json()["items"]
    assert len(both) == 5
    bad = client.get("/v1/jobs", params={"cursor": "not-a-cursor"})  # refused by its declared pattern
    assert (bad.status_code, bad.json()["type"]) == (422, "urn:nncompress:problem:validation_error")


def test_cancel_queued_running_and_finished_jobs(client: TestClient) -> None:
    model_id = uploaded_mnist(client)
    queued, running = (client.post("/v1/jobs", json=job_body(model_id)).json()["id"] for _ in range(2))

    response = client.post(f"/v1/jobs/{queued}/cancel")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["finished_at"] is not None) == ("cancelled", True)
    assert [e["type"] for e in client.get(f"/v1/jobs/{queued}/events").json()["items"]] == [
        "created",
        "cancelled",
    ]

    set_status(client, running, status="running")
    response = client.post(f"/v1/jobs/{running}/cancel")
    assert (response.status_code, response.json()["status"]) == (202, "cancelling")
    assert response.json()["cancel_requested"] is True
    assert client.post(f"/v1/jobs/{running}/cancel").json()["status"] == "cancelling"

    again = client.post(f"/v1/jobs/{queued}/cancel")
    assert (again.status_code, again.json()["type"]) == (409, "urn:nncompress:problem:job_finished")


def test_events_page_with_after(client: TestClient) -> None:
    model_id = uploaded_mnist(client)
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        job = finished_job(session, client.app.state.storage, model_id, {})  # type: ignore[attr-defined]
    job_id = job.id
    first = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1}).json()
    assert len(first["items"]) == 1
    rest = client.get(f"/v1/jobs/{job_id}/events", params={"after": first["next_cursor"]}).json()
    assert rest["items"] == [] and rest["next_cursor"] == first["next_cursor"]


def sse_ids(text: str) -> list[int]:
    return [int(line.removeprefix("id: ")) for line in text.splitlines() if line.startswith("id: ")]


def test_event_stream_sends_events_until_the_job_finished(client: TestClient) -> None:
    model_id = uploaded_mnist(client)
    job_id = client.post("/v1/jobs", json=job_body(model_id)).json()["id"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    events = client.get(f"/v1/jobs/{job_id}/events").json()["items"]
    response = client.get(f"/v1/jobs/{job_id}/events/stream")  # returns: the job has finished
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert sse_ids(response.text) == [e["id"] for e in events]
    assert "event: cancelled" in response.text
    resumed = client.get(f"/v1/jobs/{job_id}/events/stream", headers={"Last-Event-ID": str(events[0]["id"])})
    assert sse_ids(resumed.text) == [events[1]["id"]]


def test_oversize_json_body_is_413_problem(client: TestClient) -> None:
    huge = job_body("m" * 32, config_list=[{"sparse_ratio": 0.5, "op_names": ["x" * 1000] * 5000}])
    response = client.post("/v1/jobs", json=huge)
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:nncompress:problem:request_too_large"


def test_oversize_chunked_json_body_is_413_problem(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies as the bytes arrive
        yield b'{"model_id": "' + b"m" * (5 * 1024 * 1024)
        yield b'"}'

    response = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["type"] == "urn:nncompress:problem:request_too_large"
