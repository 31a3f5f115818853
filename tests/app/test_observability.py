"""Structured logs (job id, tenant, request id) and the Prometheus metrics of the API."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from core.logs import configure_logging, log_context
from tests.app.factories import job_body, uploaded_mnist
from tests.conftest import bearer
from workers import state


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_log_lines_carry_job_id_tenant_and_request_id(
    make_client: Callable[..., Any],
    make_settings: Any,
    make_api_key: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(log_format="json", require_api_keys=True)
    client = make_client(settings)  # the lifespan installs the JSON handler on this test's stderr
    client.headers.update(bearer(make_api_key(settings, "ml-team")))
    response = client.post(
        "/v1/jobs", json=job_body(uploaded_mnist(client)), headers={"X-Request-ID": "req-42"}
    )
    assert response.status_code == 202 and response.headers["x-request-id"] == "req-42"
    lines = json_lines(capsys.readouterr().err)
    (queued,) = [line for line in lines if line["msg"] == "job queued"]
    assert queued["job_id"] == response.json()["id"]
    assert queued["tenant"] == "ml-team" and queued["request_id"] == "req-42"
    assert {"ts", "level", "logger"} <= set(queued) and queued["level"] == "info"
    access = [line for line in lines if line["logger"] == "app.access" and line["request_id"] == "req-42"]
    assert access and access[0]["tenant"] == "ml-team" and access[0]["status"] == 202
    configure_logging("text")


def test_worker_log_context_reaches_every_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    try:
        with log_context(job_id="j123", tenant="ml-team"):
            logging.getLogger("workers.runner").warning("job %s: lease lost", "j123")
        logging.getLogger("workers.runner").warning("outside")
    finally:
        configure_logging("text")
    inside, outside = json_lines(capsys.readouterr().err)[-2:]
    assert (inside["job_id"], inside["tenant"], inside["msg"]) == ("j123", "ml-team", "job j123: lease lost")
    assert outside["job_id"] is None and outside["tenant"] is None


def metric(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name + ("{" + selector + "}" if labels else "")) + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    assert match is not None, f"{name} {labels} not in /metrics"
    return float(match.group(1))


def test_metrics_show_jobs_queue_depth_and_requests(make_client: Callable[..., Any]) -> None:
    client = make_client()
    model_id = uploaded_mnist(client)
    for _ in range(2):
        assert client.post("/v1/jobs", json=job_body(model_id)).status_code == 202
    assert client.post("/v1/jobs", json=job_body(model_id, device="cuda")).status_code == 202
    text = client.get("/metrics").text
    assert metric(text, "nncompress_jobs", status="queued") == 3
    assert metric(text, "nncompress_queue_depth", queue="cpu") == 2
    assert metric(text, "nncompress_queue_depth", queue="gpu") == 1
    assert metric(text, "nncompress_http_requests_total", method="POST", route="/v1/jobs", status="202") == 3


def test_distributed_metrics_read_the_broker_queues_and_worker_beats(
    make_client: Callable[..., Any], make_settings: Any
) -> None:
    import redis

    db = "redis://127.0.0.1:6379/13"  # a database of its own: the queue names are the real ones
    r = redis.Redis.from_url(db)
    r.delete("cpu", "gpu")
    worker = f"host:{uuid.uuid4().hex[:6]}"
    try:
        r.lpush("cpu", "m1", "m2", "m3")
        r.set(f"nncompress:worker-beat:{worker}", "0", ex=60)  # a beat at the epoch: very old
        text = make_client(make_settings(broker_url=db)).get("/metrics").text
        assert metric(text, "nncompress_queue_depth", queue="cpu") == 3
        assert metric(text, "nncompress_queue_depth", queue="gpu") == 0
        assert metric(text, "nncompress_worker_heartbeat_age_seconds", worker=worker) > 1e9
    finally:
        r.delete("cpu", "gpu", f"nncompress:worker-beat:{worker}")


def test_stage_durations_come_from_the_workers_stage_events(make_client: Callable[..., Any]) -> None:
    client = make_client()
    model_id = uploaded_mnist(client)
    jobs = [client.post("/v1/jobs", json=job_body(model_id)).json()["id"] for _ in range(2)]
    before = client.get("/metrics").text  # a scrape before: the next one adds only what is new
    assert "nncompress_stage_duration_seconds_count" not in before
    sessions = client.app.state.session_factory  # type: ignore[attr-defined]
    with sessions() as session:
        for job_id in jobs:  # what a worker writes
            state.claim(session, job_id, "w1", 30)
            state.set_progress(session, job_id, "w1", stage="pruning", percent=10)
            state.set_progress(session, job_id, "w1", stage="speedup", percent=50)
        state.finish_succeeded(session, jobs[0], "w1", metrics=None, result=None, artifacts=[])
        state.finish_failed(session, jobs[1], "w1", error_type="boom", message="x")
    text = client.get("/metrics").text
    assert metric(text, "nncompress_stage_duration_seconds_count", stage="pruning") == 2
    assert metric(text, "nncompress_stage_duration_seconds_count", stage="speedup") == 2  # closed by the end
    assert metric(text, "nncompress_stage_duration_seconds_bucket", le="+Inf", stage="pruning") == 2
    assert 0 <= metric(text, "nncompress_stage_duration_seconds_sum", stage="pruning") < 60
    again = client.get("/metrics").text  # scraping again counts nothing twice
    assert metric(again, "nncompress_stage_duration_seconds_count", stage="pruning") == 2
