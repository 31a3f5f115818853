"""Submitting writes the job and its event with Core statements and a cached model description:
what a submit answers is what the job's row holds, and a cached model cannot outlive its row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import delete, select

from app.services.jobs import MODEL_VIEWS
from core.db.models import Job, JobEvent, Model
from core.tracking.outbox import FINAL_EVENTS
from core.webhooks.outbox import WEBHOOK_EVENT_OF
from tests.app.factories import job_body, uploaded_mnist

NOT_FOUND = "urn:nncompress:problem:not_found"


@pytest.fixture
def client(make_client: Callable[..., Any], make_settings: Any, db_url: str) -> Any:
    return make_client(make_settings(database_url=db_url))


def test_the_submit_answer_is_the_stored_job(client: Any) -> None:
    model_id = uploaded_mnist(client)
    submitted = client.post("/v1/jobs", json=job_body(model_id, options={"latency_runs": 3}))
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    polled = client.get(f"/v1/jobs/{job['id']}").json()
    assert polled == job  # timestamps included: the answer is the inserted values, not a guess
    with client.app.state.session_factory() as session:
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job["id"])).all()
        row = session.get(Job, job["id"])
        assert row is not None
        assert (row.request_hash, row.idempotency_key, row.tenant_id) != (None, None, None)
    assert [(e.type, e.status, e.stage, e.progress, e.message) for e in events] == [
        ("created", "queued", None, 0.0, "job queued")
    ]


def test_a_new_job_queues_no_webhook_or_mlflow_message() -> None:
    # The Core INSERT of a new job writes its "created" event and nothing else: if either outbox
    # ever sends on "created", the submit must queue that message too.
    assert "created" not in WEBHOOK_EVENT_OF
    assert "created" not in FINAL_EVENTS


def test_a_cached_model_whose_row_is_gone_is_not_found(client: Any) -> None:
    model_id = uploaded_mnist(client)
    # A refused submit still reads (and caches) the model's description.
    refused = client.post("/v1/jobs", json=job_body(model_id, config_list=[{"op_names": ["nope"]}]))
    assert refused.status_code == 422, refused.text
    assert model_id in MODEL_VIEWS._entries
    with client.app.state.session_factory() as session:
        session.execute(delete(Model).where(Model.id == model_id))
        session.commit()
    response = client.post("/v1/jobs", json=job_body(model_id))
    assert (response.status_code, response.json()["type"]) == (404, NOT_FOUND), response.text
    assert response.json()["errors"] == [{"field": "model_id"}]
    assert model_id not in MODEL_VIEWS._entries


def test_postgresql_inserts_nothing_for_a_tenant_that_is_gone(pg_url: str) -> None:
    # The one-statement insert takes the tenant id from the row it locks: without that row it
    # inserts nothing, and must say so rather than answer 202 for a job that does not exist.
    from app.services.job_insert import JOB_COLUMNS, insert_queued_job
    from core.db.session import make_engine
    from core.db.types import new_id, utcnow
    from core.errors import Unauthorized

    now = utcnow()
    row: dict[str, Any] = dict.fromkeys(JOB_COLUMNS)
    row.update(
        id=new_id(), tenant_id=new_id(), model_id=new_id(), status="queued", progress=0.0, spec={},
        device="cpu", queue="cpu", attempt=0, max_attempts=3, cancel_requested=False,
        created_at=now, updated_at=now,
    )  # fmt: skip
    engine = make_engine(pg_url)
    try:
        with engine.connect() as connection, pytest.raises(Unauthorized, match="no longer exists"):
            insert_queued_job(connection, row, limit=10)
    finally:
        engine.dispose()


def test_a_config_list_that_fitted_a_model_is_not_resolved_again(client: Any) -> None:
    from app.services import validation

    model_id = uploaded_mnist(client)
    body = job_body(model_id)
    fitted = [key for key in validation._FITTING if key[0] == model_id]
    assert fitted == []
    for options in ({}, {"seed": 3}):  # a sweep over options keeps the config_list
        response = client.post("/v1/jobs", json={**body, "options": options})
        assert response.status_code == 202, response.text
    assert [key for key in validation._FITTING if key[0] == model_id] == [
        (model_id, validation.json.dumps(body["config_list"], sort_keys=True, separators=(",", ":")))
    ]
    wrong = job_body(model_id, config_list=[{"sparse_ratio": 0.5, "op_names": ["conv9"]}])
    for _ in range(2):  # a refusal is not remembered: it is refused, naming the layer, every time
        response = client.post("/v1/jobs", json=wrong)
        assert response.status_code == 422 and "conv9" in response.text, response.text
    assert len([key for key in validation._FITTING if key[0] == model_id]) == 1
