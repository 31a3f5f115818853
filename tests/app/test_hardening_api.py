"""No request makes the API answer 5xx: non-finite and huge numbers, malformed ids, deep JSON headers;
and resource bounds at POST /v1/jobs (issue 13). On SQLite and PostgreSQL (NUL bytes are PostgreSQL's)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.app.factories import job_body, upload, uploaded_mnist
from tests.conftest import RecordingDispatcher

PROBLEM = "application/problem+json"


@pytest.fixture
def client(make_client: Callable[..., Any], make_settings: Any, db_url: str) -> TestClient:
    return make_client(make_settings(database_url=db_url))


def post_raw(client: TestClient, path: str, raw: str) -> Any:
    return client.post(path, content=raw, headers={"content-type": "application/json"})


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:nncompress:problem:{code}"
    return problem


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "9" * 400])
def test_non_finite_or_huge_sparsity_is_422_naming_the_field(client: TestClient, number: str) -> None:
    model_id = uploaded_mnist(client)
    entry = f'{{"sparsity": {number}, "op_types": ["Conv2d"]}}'
    raw = f'{{"model_id": "{model_id}", "config_list": [{entry}]}}'
    problem = assert_problem(post_raw(client, "/v1/jobs", raw), 422, "invalid_job_spec")
    assert "config_list[0].sparsity" in problem["detail"]
    assert client.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize("number", ["NaN", "Infinity", "9" * 400])
def test_preflight_refuses_non_finite_numbers_too(client: TestClient, number: str) -> None:
    model_id = uploaded_mnist(client)
    raw = f'{{"config_list": [{{"sparse_ratio": {number}, "op_types": ["Conv2d"]}}]}}'
    response = post_raw(client, f"/v1/models/{model_id}/preflight", raw)
    assert "config_list[0].sparse_ratio" in assert_problem(response, 422, "invalid_job_spec")["detail"]
    for shape in ([2**63, 1, 28, 28], [2**40, 1, 28, 28]):
        body = {"config_list": [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}], "input_shape": shape}
        response = client.post(f"/v1/models/{model_id}/preflight", json=body)
        assert assert_problem(response, 422, "invalid_job_spec")["errors"][0]["field"] == "input_shape[0]"


def test_problem_renderer_survives_non_json_floats() -> None:
    from starlette.requests import Request

    from app.problems import problem_response

    request = Request(
        {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": [], "query_string": b""}
    )
    errors = [{"value": float("nan"), "nested": [{"limit": float("inf")}], "big": 10**400}]
    response = problem_response(request, status=422, code="x", title="t", detail="d", errors=errors)
    (error,) = json.loads(bytes(response.body))["errors"]
    assert error["value"] == "nan" and error["nested"] == [{"limit": "inf"}]
    assert error["big"] == "<an integer of 401 digits>"


@pytest.mark.parametrize(
    ("overrides", "field", "maximum"),
    [
        ({"input_shape": [2**63, 1, 28, 28]}, "input_shape[0]", 2**63 - 1),
        ({"input_shape": [2**40, 1, 28, 28]}, "input_shape[0]", 1024),
        ({"input_shape": [100_000, 1, 28, 28]}, "input_shape[0]", 1024),
        ({"input_shape": [1000, 1, 28, 28]}, "input_shape", 100_000),
        ({"options": {"latency_batch_sizes": [1, 10**6]}}, "latency_batch_sizes[1]", 1024),
        ({"options": {"latency_batch_sizes": [1000]}}, "latency_batch_sizes[0]", 100_000),
        ({"options": {"latency_runs": 10**9}}, "latency_runs", 1000),
        ({"options": {"seed": 2**70}}, "options.seed", 2**63 - 1),
        ({"options": {"seed": 2**63}}, "options.seed", 2**63 - 1),
        ({"finetune": {"epochs": 10**6}, "dataset_id": None}, "finetune.epochs", 100),
    ],
)
def test_resource_bounds_at_the_door(
    make_client: Callable[..., Any],
    make_settings: Any,
    overrides: dict[str, Any],
    field: str,
    maximum: int,
) -> None:
    client = make_client(make_settings(max_input_elements=100_000))
    model_id = uploaded_mnist(client)
    response = client.post("/v1/jobs", json=job_body(model_id, **overrides))
    problem = assert_problem(response, 422, "invalid_job_spec")
    (error,) = problem["errors"]
    assert (error["field"], error["maximum"]) == (field, maximum)
    assert field in problem["detail"]
    assert client.get("/v1/jobs").json()["items"] == []


def test_jobs_within_the_bounds_are_accepted(make_client: Callable[..., Any], make_settings: Any) -> None:
    client = make_client(make_settings(max_input_elements=100_000, max_latency_runs=50))
    model_id = uploaded_mnist(client)
    options = {"latency_runs": 50, "latency_batch_sizes": [1, 64], "seed": 2**63 - 1}
    response = client.post("/v1/jobs", json=job_body(model_id, input_shape=[64, 1, 28, 28], options=options))
    assert response.status_code == 202, response.text


class InProcessDispatcher(RecordingDispatcher):
    """Stands in for the embedded dispatcher: jobs would run in this process."""

    runs_in_process = True


def test_cuda_job_refused_by_an_embedded_server_without_cuda(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.dispatch import EmbeddedDispatcher

    assert EmbeddedDispatcher.runs_in_process is True
    monkeypatch.setattr("app.routes.job_submit.cuda_present", lambda: False)
    client = make_client(dispatcher=InProcessDispatcher())
    model_id = uploaded_mnist(client)
    response = client.post("/v1/jobs", json=job_body(model_id, device="cuda"))
    problem = assert_problem(response, 422, "invalid_job_spec")
    assert problem["errors"][0]["field"] == "device"
    assert client.post("/v1/jobs", json=job_body(model_id, device="cpu")).status_code == 202
    # With CUDA present the same server takes it.
    monkeypatch.setattr("app.routes.job_submit.cuda_present", lambda: True)
    assert client.post("/v1/jobs", json=job_body(model_id, device="cuda")).status_code == 202


@pytest.mark.parametrize("bad", ["a%00b", "%00" * 32, "x" * 64, "F" * 32, "..%2F..%2Fetc"])
def test_malformed_ids_are_404_before_the_database(client: TestClient, bad: str) -> None:
    for path in (f"/v1/jobs/{bad}", f"/v1/models/{bad}", f"/v1/datasets/{bad}", f"/v1/jobs/{bad}/events"):
        response = client.get(path)
        assert response.status_code in (404, 422), (path, response.text)


@pytest.mark.parametrize("field", ["model_id", "dataset_id"])
def test_nul_in_body_ids_is_404(client: TestClient, field: str) -> None:
    model_id = uploaded_mnist(client)
    body = {**job_body(model_id), field: "a\x00b"}
    problem = assert_problem(client.post("/v1/jobs", json=body), 404, "not_found")
    assert problem["errors"][0]["field"] == field


def test_cursor_with_a_nul_id_is_refused_by_its_pattern(client: TestClient) -> None:
    import base64

    raw = json.dumps(["2026-01-01T00:00:00+00:00", "a\x00b"]).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert_problem(client.get("/v1/jobs", params={"cursor": cursor}), 422, "validation_error")
    nul = "0." + "0" * 15 + "\x00" + "0" * 16  # the cursor's own shape, with a NUL in the id
    assert_problem(client.get("/v1/jobs", params={"cursor": nul}), 422, "validation_error")


def _safetensors_with_header(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize(
    "header",
    [b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"{" + b'"a":{' * 5000 + b"}" * 5001],
)
def test_deeply_nested_safetensors_header_is_422(client: TestClient, header: bytes) -> None:
    data = _safetensors_with_header(header)
    for fields in ({"architecture": "mnist_net"}, {}):
        problem = assert_problem(upload(client, data, **fields), 422, "invalid_upload")
        assert "levels deep" in problem["detail"]
    # The connection stays usable: the next request on the same client is answered.
    assert client.get("/healthz").status_code == 200


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    from app.services.json_bounds import json_depth

    assert json_depth(b'{"a[[[[{{{{": ["]]]\\"[[["]}') == 2
    assert json_depth(b'"just a string"') == 0
