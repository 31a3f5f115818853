"""POST /v1/jobs is taken by app.routes.job_submit when its body is plain JSON that JobIn validates,
and handed on to FastAPI's route otherwise: both give the same answers, and a request is
authenticated (and rate limited) once whichever route answers it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.routes import job_submit
from app.schemas.jobs import JobIn
from tests.app.factories import job_body, uploaded_mnist
from tests.conftest import bearer

VALIDATION = "urn:nncompress:problem:validation_error"


@pytest.fixture
def client(make_client: Callable[..., Any]) -> TestClient:
    client: TestClient = make_client()
    return client


@pytest.fixture
def routes_taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which route queued each accepted submit: 'fast' or 'fastapi'."""
    taken: list[str] = []
    queue = job_submit.queue_job

    def fast(*args: Any) -> Any:
        taken.append("fast")
        return queue(*args)

    def via_fastapi(*args: Any) -> Any:
        taken.append("fastapi")
        return queue(*args)

    monkeypatch.setattr(job_submit, "queue_job", fast)
    monkeypatch.setattr("app.routes.jobs.queue_job", via_fastapi)
    return taken


BODIES: list[dict[str, Any]] = [
    {},
    {"pruner": "l1norm", "speedup": False, "input_shape": [2, 1, 28, 28], "device": "cpu"},
    {"config_list": [{"sparsity_per_layer": 0.5, "op_types": ["Conv2d"], "exclude_op_names": ["fc2"]}]},
    {"config_list": None, "pruner": None},
    {"options": {"seed": 2**62, "latency_runs": 3}, "webhook": {"url": "https://example.org/h"}},
    {"finetune": {"epochs": 1}, "options": {"dataset": "mnist_subset"}},
    {"quantize": {"mode": "dynamic"}},
]


@pytest.mark.parametrize("extra", BODIES)
def test_the_body_read_from_bytes_is_the_body_fastapi_reads(extra: dict[str, Any]) -> None:
    # FastAPI reads json.loads' values and validates them as Python; the fast route validates the
    # bytes. The job must not depend on which one read it: same values, same fields set.
    raw = json.dumps({**job_body("0" * 32), **extra}).encode()
    from_bytes = JobIn.model_validate_json(raw)
    from_python = JobIn.model_validate(json.loads(raw))
    assert from_bytes == from_python
    assert from_bytes.model_fields_set == from_python.model_fields_set
    assert from_bytes.model_dump() == from_python.model_dump()


def test_a_plain_submit_takes_the_fast_route_and_answers_as_fastapi_would(
    client: TestClient, routes_taken: list[str]
) -> None:
    model_id = uploaded_mnist(client)
    fast = client.post("/v1/jobs", json=job_body(model_id), headers={"Idempotency-Key": "k1"})
    # application/*+json is JSON to FastAPI but not plain enough for the fast route: handed on.
    handed_on = client.post(
        "/v1/jobs",
        content=json.dumps(job_body(model_id)),
        headers={"Content-Type": "application/vnd.nncompress+json"},
    )
    assert (fast.status_code, handed_on.status_code) == (202, 202), (fast.text, handed_on.text)
    assert routes_taken == ["fast", "fastapi"]
    assert fast.headers["location"] == f"/v1/jobs/{fast.json()['id']}"
    assert set(fast.json()) == set(handed_on.json())
    replayed = client.post("/v1/jobs", json=job_body(model_id), headers={"Idempotency-Key": "k1"})
    assert (replayed.status_code, replayed.headers["idempotent-replayed"]) == (202, "true")
    assert replayed.json() == fast.json()


@pytest.mark.parametrize(
    ("content", "headers", "loc"),
    [
        ('{"model_id": "x",', {"Content-Type": "application/json"}, ["body", 17]),
        ('{"pruner": "l1norm"}', {"Content-Type": "application/json"}, ["body", "model_id"]),
        ("", {"Content-Type": "application/json"}, ["body"]),
        ('{"model_id": "%s"}' % ("0" * 32), {"Content-Type": "text/plain"}, ["body"]),
        (
            '{"model_id": "%s"}' % ("0" * 32),
            {"Content-Type": "application/json", "Idempotency-Key": ""},
            None,
        ),
    ],
)
def test_what_the_fast_route_cannot_read_gets_fastapis_422(
    client: TestClient, routes_taken: list[str], content: str, headers: dict[str, str], loc: list[Any] | None
) -> None:
    response = client.post("/v1/jobs", content=content, headers=headers)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == VALIDATION
    assert response.headers["content-type"].startswith("application/problem+json")
    if loc is not None:
        assert problem["errors"][0]["loc"] == loc, problem
    else:
        assert problem["errors"][0]["loc"][0] == "header", problem
    assert routes_taken == []


def test_a_handed_on_submit_is_authenticated_and_rate_limited_once(
    make_client: Callable[..., Any], make_settings: Any, make_api_key: Callable[..., str]
) -> None:
    settings = make_settings(require_api_keys=True)
    client = make_client(settings)
    client.headers.update(bearer(make_api_key(settings, "alice", requests_per_minute=3)))
    # JSON that JobIn refuses: handed on, and FastAPI authenticates before it reports the body.
    bad = client.post("/v1/jobs", json={"pruner": "l1norm"})
    good_body_unknown_model = client.post("/v1/jobs", json=job_body("0" * 32))
    assert (bad.status_code, good_body_unknown_model.status_code) == (422, 404)
    assert client.get("/v1/jobs").status_code == 200  # the third request of three
    limited = client.post("/v1/jobs", json=job_body("0" * 32))
    assert (limited.status_code, limited.json()["type"]) == (429, "urn:nncompress:problem:rate_limited")
    anonymous = make_client(settings).post("/v1/jobs", json=job_body("0" * 32))
    assert anonymous.status_code == 401
    assert anonymous.json()["type"] == "urn:nncompress:problem:unauthorized"


def test_other_methods_on_the_path_get_fastapis_answer(client: TestClient) -> None:
    # The fast route matches POST only: on another method the path's FastAPI routes answer (a
    # partial match here would claim the path allows POST alone).
    response = client.request("OPTIONS", "/v1/jobs")
    assert (response.status_code, response.json()["type"]) == (
        405,
        "urn:nncompress:problem:method_not_allowed",
    )
    assert response.headers.get("allow") != "POST"
    assert client.get("/v1/jobs").status_code == 200


def test_the_metrics_and_access_log_name_the_route_template(client: TestClient) -> None:
    model_id = uploaded_mnist(client)
    assert client.post("/v1/jobs", json=job_body(model_id)).status_code == 202
    metrics = client.get("/metrics").text
    assert 'route="/v1/jobs",status="202"' in metrics
