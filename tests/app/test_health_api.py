"""/healthz, /readyz, /metrics and the OpenAPI docs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.db.session import make_engine
from tests.app.factories import job_body, uploaded_mnist


def test_healthz_and_readyz(make_client: Callable[..., Any]) -> None:
    client = make_client()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_readyz_is_503_problem_when_the_broker_is_down(make_client: Callable[..., Any]) -> None:
    client = make_client()
    client.app.state.dispatcher.check_error = ConnectionError("redis at 127.0.0.1:1 refused the connection")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:nncompress:problem:not_ready"
    assert problem["errors"] == [
        {"component": "dispatcher", "message": "redis at 127.0.0.1:1 refused the connection"}
    ]


def test_readyz_is_503_when_the_database_is_unreachable(
    make_client: Callable[..., Any], make_settings: Any
) -> None:
    client = make_client(make_settings())
    client.app.state.engine.dispose()
    client.app.state.session_factory.configure(
        bind=make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert [e["component"] for e in response.json()["errors"]] == ["database"]


def test_metrics_count_jobs_by_status_and_requests_by_route(make_client: Callable[..., Any]) -> None:
    client = make_client()
    model_id = uploaded_mnist(client)
    job_id = client.post("/v1/jobs", json=job_body(model_id)).json()["id"]
    client.get(f"/v1/jobs/{job_id}")
    client.get("/v1/jobs/" + "0" * 32)
    text = client.get("/metrics").text
    assert 'nncompress_jobs{status="queued"} 1.0' in text
    assert 'nncompress_jobs{status="running"} 0.0' in text
    assert 'nncompress_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"} 1.0' in text
    assert 'nncompress_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 1.0' in text


def test_openapi_describes_every_resource(make_client: Callable[..., Any]) -> None:
    client = make_client()
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/models",
        "/v1/models/{model_id}/preflight",
        "/v1/jobs",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/artifacts/{name}",
        "/readyz",
    } <= set(paths)
    assert "multipart/form-data" in paths["/v1/models"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_keys_guard_v1_but_not_the_probes(
    make_client: Callable[..., Any], make_settings: Any, make_api_key: Callable[..., str]
) -> None:
    settings = make_settings(require_api_keys=True)
    key = make_api_key(settings)
    client = make_client(settings)
    response = client.get("/v1/jobs")
    assert (response.status_code, response.json()["type"]) == (401, "urn:nncompress:problem:unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer wrong-key-wrong-key"}).status_code == 401
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")  # right prefix, wrong secret
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/healthz").status_code == client.get("/readyz").status_code == 200
