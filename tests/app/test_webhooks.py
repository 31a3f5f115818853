"""Webhooks: Standard Webhooks signatures checked by a real receiver, retries, refused URLs, records."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.auth.keys import new_webhook_secret
from core.db.models import Tenant
from core.webhooks.deliverer import WebhookDeliverer
from tests.app.factories import job_body, uploaded_mnist
from tests.conftest import WebhookReceiver, bearer
from workers import state

ALL_EVENTS = ["started", "stage_changed", "succeeded", "failed", "cancelled"]


def expected_signature(secret: str, headers: dict[str, str], body: bytes) -> str:
    # Written from the Standard Webhooks spec, independently of core.webhooks.signing.
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@pytest.fixture
def settings(make_settings: Any, db_url: str) -> Any:
    return make_settings(database_url=db_url, webhook_allow_private=True, webhook_backoff_seconds=0.05)


def submit(client: TestClient, webhook: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=job_body(uploaded_mnist(client), webhook=webhook))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def run_job_to_success(client: TestClient, job_id: str) -> None:
    """What a worker does, through the same state functions: claim, two stages, success."""
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        assert state.claim(session, job_id, "w1", 30) is not None
        assert state.set_progress(session, job_id, "w1", stage="pruning", percent=10)
        assert state.set_progress(session, job_id, "w1", stage="speedup", percent=50)
        assert state.finish_succeeded(session, job_id, "w1", metrics=None, result=None, artifacts=[])


def deliver_until(
    client: TestClient, settings: Any, done: Callable[[], bool], timeout: float = 20.0
) -> WebhookDeliverer:
    deliverer = WebhookDeliverer(client.app.state.session_factory, settings)  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "webhook deliveries did not happen in time"
        if not deliverer.run_once():
            time.sleep(0.02)
    return deliverer


def test_deliveries_are_signed_and_follow_the_subscription(
    make_client: Callable[..., Any], settings: Any, webhook_receiver: WebhookReceiver
) -> None:
    client = make_client(settings)
    secret = new_webhook_secret()
    job_id = submit(
        client, {"url": webhook_receiver.url, "events": ["started", "succeeded"], "secret": secret}
    )
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["webhook"] == {
        "url": webhook_receiver.url,
        "events": ["started", "succeeded"],
    }  # no secret shown
    run_job_to_success(client, job_id)
    deliver_until(client, settings, lambda: len(webhook_receiver.received) >= 2)
    time.sleep(0.2)  # nothing else may arrive: stage changes were not subscribed
    assert len(webhook_receiver.received) == 2
    bodies = [json.loads(body) for _, body in webhook_receiver.received]
    assert [b["type"] for b in bodies] == ["job.started", "job.succeeded"]
    assert bodies[1]["data"]["job_id"] == job_id and bodies[1]["data"]["status"] == "succeeded"
    for headers, body in webhook_receiver.received:
        assert headers["webhook-signature"] == expected_signature(secret, headers, body)
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
        assert headers["content-type"] == "application/json"
    forged = expected_signature(new_webhook_secret(), *webhook_receiver.received[0])
    assert forged != webhook_receiver.received[0][0]["webhook-signature"]
    listed = client.get(f"/v1/jobs/{job_id}/webhook-deliveries").json()["items"]
    assert [(d["event"], d["attempt"], d["status_code"]) for d in listed] == [
        ("started", 1, 204),
        ("succeeded", 1, 204),
    ]
    assert all(d["delivered_at"] is not None and d["error"] is None for d in listed)


def test_without_a_job_secret_the_tenant_secret_signs(
    make_client: Callable[..., Any], settings: Any, webhook_receiver: WebhookReceiver
) -> None:
    client = make_client(settings)
    job_id = submit(client, {"url": webhook_receiver.url, "events": ALL_EVENTS})
    run_job_to_success(client, job_id)
    deliver_until(client, settings, lambda: len(webhook_receiver.received) >= 4)
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        secret = session.scalars(select(Tenant.webhook_secret).where(Tenant.name == "default")).one()
    types = [json.loads(body)["type"] for _, body in webhook_receiver.received]
    assert types == ["job.started", "job.stage_changed", "job.stage_changed", "job.succeeded"]
    for headers, body in webhook_receiver.received:
        assert headers["webhook-signature"] == expected_signature(secret, headers, body)


def test_failed_deliveries_are_retried_with_backoff_and_recorded(
    make_client: Callable[..., Any], settings: Any, webhook_receiver: WebhookReceiver
) -> None:
    client = make_client(settings)
    webhook_receiver.statuses = [500, 503]  # fails twice, then the default 204
    job_id = submit(client, {"url": webhook_receiver.url, "events": ["succeeded"]})
    run_job_to_success(client, job_id)
    started = time.monotonic()
    deliver_until(client, settings, lambda: len(webhook_receiver.received) >= 3)
    # Backoff 0.05 s then 0.1 s: the third attempt cannot come before 0.15 s.
    assert time.monotonic() - started >= 0.15
    ids = {headers["webhook-id"] for headers, _ in webhook_receiver.received}
    assert len(ids) == 1  # one message, three attempts: receivers deduplicate on webhook-id
    listed = client.get(f"/v1/jobs/{job_id}/webhook-deliveries").json()["items"]
    assert [(d["attempt"], d["status_code"], d["error"]) for d in listed] == [
        (1, 500, "HTTP 500"),
        (2, 503, "HTTP 503"),
        (3, 204, None),
    ]
    assert [d["delivered_at"] is not None for d in listed] == [False, False, True]
    assert {d["message_id"] for d in listed} == ids


def test_retries_stop_at_max_attempts_and_never_block_the_job(
    make_client: Callable[..., Any], make_settings: Any, webhook_receiver: WebhookReceiver
) -> None:
    settings = make_settings(webhook_allow_private=True, webhook_backoff_seconds=0.01, webhook_max_attempts=2)
    client = make_client(settings)
    assert webhook_receiver.server is not None
    dead_port = webhook_receiver.server.server_address[1]
    webhook_receiver.server.shutdown()
    webhook_receiver.server.server_close()  # nothing listens there any more: connection refused
    job_id = submit(client, {"url": f"http://127.0.0.1:{dead_port}/x", "events": ["succeeded"]})
    started = time.monotonic()
    run_job_to_success(client, job_id)  # the transition only writes an outbox row
    assert time.monotonic() - started < 5
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"

    def attempts() -> list[dict[str, Any]]:
        return list(client.get(f"/v1/jobs/{job_id}/webhook-deliveries").json()["items"])

    deliver_until(client, settings, lambda: len(attempts()) == 2 and attempts()[-1]["at"] is not None)
    time.sleep(0.1)
    deliverer = WebhookDeliverer(client.app.state.session_factory, settings)  # type: ignore[attr-defined]
    assert deliverer.run_once() == 0  # no third attempt is scheduled
    rows = attempts()
    assert [r["attempt"] for r in rows] == [1, 2]
    assert all("ConnectError" in (r["error"] or "") and r["delivered_at"] is None for r in rows)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://localhost:9000/hook",  # a host name that resolves to loopback
        "ftp://example.com/hook",
        "/relative/hook",
    ],
)
def test_private_and_non_http_callback_urls_are_refused(
    make_client: Callable[..., Any], make_settings: Any, url: str
) -> None:
    client = make_client(make_settings())  # webhook_allow_private defaults to false
    response = client.post(
        "/v1/jobs", json=job_body(uploaded_mnist(client), webhook={"url": url, "events": ["succeeded"]})
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"] in (
        "urn:nncompress:problem:invalid_webhook",
        "urn:nncompress:problem:validation_error",
    )
    assert client.get("/v1/jobs").json()["items"] == []


def test_bad_webhook_fields_are_422(make_client: Callable[..., Any], settings: Any) -> None:
    client = make_client(settings)
    model_id = uploaded_mnist(client)
    for webhook in (
        {"url": "http://127.0.0.1/x", "events": ["exploded"]},
        {"url": "http://127.0.0.1/x", "events": []},
        {"url": "http://127.0.0.1/x", "secret": "not-a-whsec"},
    ):
        response = client.post("/v1/jobs", json=job_body(model_id, webhook=webhook))
        assert response.status_code == 422, webhook


def test_deliveries_of_another_tenant_are_404(
    make_client: Callable[..., Any],
    make_settings: Any,
    make_api_key: Callable[..., str],
    webhook_receiver: WebhookReceiver,
) -> None:
    settings = make_settings(require_api_keys=True, webhook_allow_private=True)
    alice, bob = make_client(settings), make_client(settings)
    alice.headers.update(bearer(make_api_key(settings, "alice")))
    bob.headers.update(bearer(make_api_key(settings, "bob")))
    job_id = submit(alice, {"url": webhook_receiver.url})
    assert alice.get(f"/v1/jobs/{job_id}/webhook-deliveries").status_code == 200
    assert bob.get(f"/v1/jobs/{job_id}/webhook-deliveries").status_code == 404
