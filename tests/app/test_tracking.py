"""MLflow tracking without a server: what a run is made of, the job's ``mlflow`` field, the outbox.

The runs themselves, logged to a real ``mlflow server``, are tested in tests/workers/test_mlflow_tracking.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from core.db.migrate import upgrade_to_head
from core.db.models import Job, MlflowDelivery
from core.db.session import make_engine, make_session_factory
from core.storage import Storage
from core.tracking.content import MAX_PARAM_CHARS, MetricPoint, job_metrics, job_params
from tests.app.factories import finished_job, job_body, model_row, uploaded_mnist
from workers import state

TRACKED = {"mlflow_tracking_uri": "http://127.0.0.1:9"}


def test_params_flatten_the_spec_with_lists_as_json() -> None:
    spec = {
        "pruner": "l1norm",
        "config_list": [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}],
        "finetune": {"epochs": 2, "lr": 0.01, "distillation": {"weight": 0.5}, "device": None},
        "quantize": None,
        "speedup": True,
    }
    params = job_params(spec)
    assert params == {
        "pruner": "l1norm",
        "config_list": '[{"sparse_ratio":0.5,"op_types":["Conv2d"]}]',
        "finetune.epochs": "2",
        "finetune.lr": "0.01",
        "finetune.distillation.weight": "0.5",
        "speedup": "true",
    }
    assert json.loads(params["config_list"]) == spec["config_list"]
    long = job_params({"config_list": [{"op_names": [f"layer{i}" for i in range(2000)]}]})
    assert len(long["config_list"]) == MAX_PARAM_CHARS and long["config_list"].endswith("...")


def test_metrics_name_each_number_by_its_path_and_make_epochs_a_step_series() -> None:
    metrics = {
        "before": {
            "params": 1000,
            "latency": [{"batch_size": 1, "median_ms": 2.5}, {"batch_size": 8, "median_ms": 9.0}],
        },
        "after": {"params": 400, "accuracy": 0.91, "device": "cpu", "sparsity": {"conv1": 0.5}},
        "finetune": {
            "distillation": True,
            "epochs": [{"epoch": 1, "val_top1": 0.8, "lr": 0.01}, {"epoch": 2, "val_top1": 0.9, "lr": 0.005}],
        },
        "bad": float("nan"),
    }
    points = job_metrics(metrics)
    assert points == [
        MetricPoint("before.params", 1000.0),
        MetricPoint("before.latency.b1.median_ms", 2.5),
        MetricPoint("before.latency.b8.median_ms", 9.0),
        MetricPoint("after.params", 400.0),
        MetricPoint("after.accuracy", 0.91),
        MetricPoint("after.sparsity.conv1", 0.5),
        MetricPoint("finetune.epochs.val_top1", 0.8, 1),
        MetricPoint("finetune.epochs.lr", 0.01, 1),
        MetricPoint("finetune.epochs.val_top1", 0.9, 2),
        MetricPoint("finetune.epochs.lr", 0.005, 2),
    ]
    assert job_metrics(None) == []


def test_a_job_names_its_experiment_and_model_only_where_tracking_is_on(
    make_client: Callable[..., Any], make_settings: Callable[..., Any]
) -> None:
    plain = make_client(make_settings())
    asked = job_body(uploaded_mnist(plain), mlflow={"experiment": "mnist", "registered_model": "mnist-net"})
    refused = plain.post("/v1/jobs", json=asked)
    assert refused.status_code == 422 and refused.json()["type"].endswith("invalid_job_spec"), refused.text
    assert refused.json()["errors"] == [{"field": "mlflow"}]
    assert plain.post("/v1/jobs", json=job_body(asked["model_id"])).json()["mlflow"] is None

    tracked = make_client(make_settings(**TRACKED, mlflow_experiment="compression"))
    model_id = uploaded_mnist(tracked)
    default = tracked.post("/v1/jobs", json=job_body(model_id)).json()
    assert default["mlflow"] == {"experiment": "compression"}
    named = tracked.post("/v1/jobs", json=job_body(model_id, mlflow={"registered_model": "mnist-net"})).json()
    assert named["mlflow"] == {"experiment": "compression", "registered_model": "mnist-net"}
    assert tracked.get(f"/v1/jobs/{named['id']}").json()["mlflow"] == named["mlflow"]
    bad = tracked.post("/v1/jobs", json=job_body(model_id, mlflow={"registered_model": "a' or '1'='1"}))
    assert bad.status_code == 422, bad.text
    assert tracked.get(f"/v1/jobs/{named['id']}/mlflow-deliveries").json() == {"items": []}


def test_a_tracked_job_gets_one_pending_delivery_when_it_ends(make_settings: Callable[..., Any]) -> None:
    # Given a finished job that was not tracked and a running one that is,
    settings = make_settings(**TRACKED)
    upgrade_to_head(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            model_id = model_row(session).id
            storage = Storage(settings.storage_dir)
            untracked = finished_job(session, storage, model_id, {})
            tracked_job = Job(id="t" * 32, tenant_id=untracked.tenant_id, model_id=model_id, spec={})
            tracked_job.mlflow = {"experiment": "e"}
            tracked_job.status = "running"
            session.add(tracked_job)
            session.commit()
            # when the tracked one ends, its end and one pending MLflow delivery commit together.
            assert state.finish_failed(session, tracked_job.id, None, error_type="x", message="boom")
            rows = list(session.scalars(select(MlflowDelivery)))
            assert [(r.job_id, r.attempt, r.at) for r in rows] == [(tracked_job.id, 1, None)]
    finally:
        engine.dispose()
