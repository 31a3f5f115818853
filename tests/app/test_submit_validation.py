"""POST /v1/jobs checks a config against the layers intake stored, not against a model built again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.services import model_summary, validation
from app.services.model_summary import build_meta, layers_of, skeleton
from core.errors import InvalidInputShape
from nncompress.config import resolve_config
from nncompress.errors import ConfigError
from tests.app.factories import job_body, uploaded_mnist

CONFIGS: list[list[dict[str, Any]]] = [
    [{"sparse_ratio": 0.5, "op_types": ["Conv2d", "Linear"]}],
    [
        {"sparse_ratio": 0.3, "op_types": ["LSTM", "GRU", "Linear"]},
        {"exclude": True, "op_names_re": [".*fc.*"]},
    ],
    [{"sparse_ratio": 0.5, "op_names": ["no.such.layer"]}],
    [{"sparse_ratio": 0.5, "op_types": ["Embedding"], "target_names": ["weight", "bias"]}],
    [{"sparse_ratio": 0.5, "op_partial_names": ["conv"], "granularity": "in_channel"}],
]


def outcome(net: Any, config: list[dict[str, Any]]) -> Any:
    try:
        return resolve_config(net, config).to_dict()
    except ConfigError as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize(
    "architecture", ["mnist_net", "resnet_bottleneck", "lstm_classifier", "gru_classifier"]
)
def test_a_skeleton_of_the_stored_layers_resolves_like_the_model(architecture: str) -> None:
    net = build_meta(architecture)
    stand_in = skeleton(layers_of(net))
    for config in CONFIGS:
        assert outcome(stand_in, config) == outcome(net, config), config


def test_submit_resolves_against_the_stored_layers_without_building_the_model(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client: TestClient = make_client()
    model_id = uploaded_mnist(client)
    details = client.get(f"/v1/models/{model_id}").json()
    assert details["summary"]["output_shape"] == [1, 10]

    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was built to check a job")

    monkeypatch.setattr(validation, "build_meta", no_build)
    assert client.post("/v1/jobs", json=job_body(model_id)).status_code == 202
    wrong = client.post(
        "/v1/jobs", json=job_body(model_id, config_list=[{"sparse_ratio": 0.5, "op_names": ["conv9"]}])
    )
    assert (wrong.status_code, wrong.json()["type"]) == (422, "urn:nncompress:problem:unknown_layer")
    assert "conv1" in wrong.json()["detail"] or "conv2" in wrong.json()["detail"]  # the nearest names


def test_another_input_shape_is_checked_by_a_forward_pass(make_client: Callable[..., Any]) -> None:
    client: TestClient = make_client()
    model_id = uploaded_mnist(client)
    bad = client.post("/v1/jobs", json=job_body(model_id, input_shape=[1, 3, 28, 28]))
    assert (bad.status_code, bad.json()["type"]) == (422, "urn:nncompress:problem:invalid_input_shape")
    again = client.post("/v1/jobs", json=job_body(model_id, input_shape=[1, 3, 28, 28]))
    assert again.json()["detail"] == bad.json()["detail"]  # a refused shape is not cached as fitting
    assert client.post("/v1/jobs", json=job_body(model_id, input_shape=[4, 1, 28, 28])).status_code == 202


def test_a_model_recorded_without_layers_is_checked_on_the_built_architecture(
    make_client: Callable[..., Any],
) -> None:
    from sqlalchemy import update

    from core.db.models import Model

    client: TestClient = make_client()
    model_id = uploaded_mnist(client)
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        session.execute(update(Model).where(Model.id == model_id).values(details={"build_kwargs": {}}))
        session.commit()
    assert client.post("/v1/jobs", json=job_body(model_id)).status_code == 202
    wrong = client.post(
        "/v1/jobs", json=job_body(model_id, config_list=[{"sparse_ratio": 0.5, "op_names": ["conv9"]}])
    )
    assert wrong.json()["type"] == "urn:nncompress:problem:unknown_layer"


def test_the_stored_output_shape_is_what_a_forward_pass_gives() -> None:
    net = build_meta("resnet_bottleneck")
    from nncompress.models import get

    arch = get("resnet_bottleneck")
    assert (
        model_summary.meta_output_shape(net, list(arch.input_shape), arch.input_dtype)[0]
        == arch.input_shape[0]
    )
    with pytest.raises(InvalidInputShape):
        validation._output_shape(net, "resnet_bottleneck", [1, 7], None)
