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


def _queued_row(tenant_id: str, model_id: str) -> dict[str, Any]:
    from app.services.job_insert import JOB_COLUMNS
    from core.db.types import new_id, utcnow

    now = utcnow()
    row: dict[str, Any] = dict.fromkeys(JOB_COLUMNS)
    row.update(
        id=new_id(), tenant_id=tenant_id, model_id=model_id, status="queued", progress=0.0,
        spec={"pruner": "l1"}, device="cpu", queue="cpu", attempt=0, max_attempts=3,
        cancel_requested=False, created_at=now, updated_at=now,
    )  # fmt: skip
    return row


def _model_and_tenant(client: Any) -> tuple[str, str]:
    """A model uploaded through the API, and the tenant it belongs to."""
    model_id = uploaded_mnist(client)
    with client.app.state.session_factory() as session:
        model = session.get(Model, model_id)
        assert model is not None
        return model_id, model.tenant_id


def test_postgresql_submits_racing_at_the_limit_admit_exactly_the_limit(
    make_client: Callable[..., Any], make_settings: Any, pg_url: str
) -> None:
    # The function counts after locking the tenant row, in a fresh snapshot: 12 submits released
    # together against a limit of 5 must leave exactly 5 jobs, the 7 others refused with nothing written.
    import threading

    from app.services.job_insert import insert_queued_job
    from core.db.session import make_engine, make_read_engine
    from core.errors import TooManyJobs

    model_id, tenant_id = _model_and_tenant(make_client(make_settings(database_url=pg_url)))
    engine = make_engine(pg_url)
    autocommit = make_read_engine(engine, pool_size=12, max_overflow=0)
    start = threading.Barrier(12)
    outcomes: list[str] = []

    def submit() -> None:
        with autocommit.connect() as connection:
            row = _queued_row(tenant_id, model_id)
            start.wait()
            try:
                insert_queued_job(connection, row, limit=5)
                outcomes.append("queued")
            except TooManyJobs as refused:
                assert refused.errors[0]["limit"] == 5
                outcomes.append(f"refused at {refused.errors[0]['unfinished']}")

    threads = [threading.Thread(target=submit) for _ in range(12)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with engine.connect() as connection:
            jobs = connection.execute(select(Job.id).where(Job.tenant_id == tenant_id)).scalars().all()
            events = connection.execute(select(JobEvent.job_id)).scalars().all()
    finally:
        autocommit.dispose()
        engine.dispose()
    assert sorted(outcomes) == ["queued"] * 5 + ["refused at 5"] * 7
    assert len(jobs) == 5
    assert sorted(events) == sorted(jobs)  # one created event for each job, none for a refusal


def test_postgresql_stores_the_submitted_values(
    pg_url: str, make_client: Callable[..., Any], make_settings: Any
) -> None:
    # The row goes to the function as one JSON document: every value must come back as it was sent.
    from app.services.job_insert import insert_queued_job
    from core.db.session import make_engine, make_read_engine, make_session_factory

    model_id, tenant_id = _model_and_tenant(make_client(make_settings(database_url=pg_url)))
    row = _queued_row(tenant_id, model_id)
    row.update(
        spec={"config_list": [{"sparse_ratio": 0.25, "op_names": ["conv1", "ü"]}], "big": 2**60, "f": 1e-300},
        webhook={"url": "https://example.org/hook", "events": ["succeeded"]},
        idempotency_key='key "quoted" \\ and unicode ✓',
        request_hash="ab" * 32,
        max_attempts=7,
        device="cuda",
        queue="gpu",
    )
    engine = make_engine(pg_url)
    autocommit = make_read_engine(engine)
    try:
        with autocommit.connect() as connection:
            insert_queued_job(connection, row, limit=10)
        with make_session_factory(engine)() as session:
            stored = session.get(Job, row["id"])
            assert stored is not None
            assert {name: getattr(stored, name) for name in row} == row
    finally:
        autocommit.dispose()
        engine.dispose()


def test_a_submit_whose_first_try_committed_answers_with_that_job(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connection that dies after its statement committed makes the retry hit the job's own id:
    # the answer is that job, once, not a 500 nor a second job.
    from app.services import jobs as job_service

    model_id = uploaded_mnist(client)
    first = client.post("/v1/jobs", json=job_body(model_id))
    assert first.status_code == 202, first.text
    monkeypatch.setattr(job_service, "new_id", lambda: first.json()["id"])
    again = client.post("/v1/jobs", json=job_body(model_id))
    assert again.status_code == 202, again.text
    assert again.json() == client.get(f"/v1/jobs/{first.json()['id']}").json()
    assert "Idempotent-Replayed" not in again.headers
    assert client.get("/v1/jobs").json()["items"] == [client.get(f"/v1/jobs/{first.json()['id']}").json()]
