"""POST/GET /v1/models and preflight: safe intake, size limit, refusals with nothing executed or left."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.app.factories import CONV_HALF, mnist_safetensors, mnist_state_dict_zip, upload, uploaded_mnist

PROBLEM = "application/problem+json"


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


class MarkerPayload:
    """Unpickling this creates ``path``: proof that something ran code from the upload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def test_upload_safetensors_records_hash_size_and_file(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = make_client()
    data = mnist_safetensors()
    response = upload(client, data, architecture="mnist_net")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert (body["size_bytes"], body["format"], body["architecture"]) == (
        len(data),
        "safetensors",
        "mnist_net",
    )
    assert response.headers["location"] == f"/v1/models/{body['id']}"
    stored = tmp_path / "storage" / "models" / body["id"] / "upload.bin"
    assert stored.read_bytes() == data
    assert client.get(f"/v1/models/{body['id']}").json() == body


def test_state_dict_zip_is_accepted_without_unpickling(make_client: Callable[..., Any]) -> None:
    response = upload(make_client(), mnist_state_dict_zip(), filename="m.pt", architecture="mnist_net")
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "state_dict"


# 100 kB is refused from Content-Length alone; 1 MB only once the streamed bytes pass the limit.
@pytest.mark.parametrize("limit", [100_000, 1_000_000])
def test_oversize_upload_is_413_and_leaves_no_file(
    make_client: Callable[..., Any], make_settings: Any, tmp_path: Path, limit: int
) -> None:
    client = make_client(make_settings(max_upload_bytes=limit))
    response = upload(client, mnist_safetensors(), architecture="mnist_net")
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:nncompress:problem:upload_too_large"
    assert files_under(tmp_path / "storage") == []


@pytest.mark.parametrize("filename", ["model.pkl", "model.safetensors"])
def test_pickle_payload_is_refused_and_never_run(
    make_client: Callable[..., Any], tmp_path: Path, filename: str
) -> None:
    marker = tmp_path / "pwned"
    response = upload(
        make_client(), pickle.dumps(MarkerPayload(marker)), filename=filename, architecture="mnist_net"
    )
    assert response.status_code == 422
    assert response.json()["type"] == "urn:nncompress:problem:pickle_disabled"
    assert not marker.exists()
    assert files_under(tmp_path / "storage") == []


def test_pickled_module_inside_torch_zip_is_refused(make_client: Callable[..., Any], tmp_path: Path) -> None:
    import io

    import torch

    from nncompress.models import get

    buffer = io.BytesIO()
    torch.save(get("mnist_net").build(), buffer)
    response = upload(make_client(), buffer.getvalue(), filename="weights.pt")
    assert response.status_code == 422
    assert response.json()["type"] == "urn:nncompress:problem:pickle_disabled"


def test_traversal_filename_only_changes_the_display_name(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    response = upload(make_client(), mnist_safetensors(), filename="../../x", architecture="mnist_net")
    assert response.status_code == 201
    body = response.json()
    assert body["filename"] == "x"
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()
    assert files_under(tmp_path / "storage") == [tmp_path / "storage" / "models" / body["id"] / "upload.bin"]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({}, "unknown_architecture"),
        ({"architecture": "resnet9000"}, "unknown_architecture"),
        ({"architecture": "mnist_net", "format": "onnx"}, "format_mismatch"),
        ({"architecture": "mnist_net", "format": "exe"}, "invalid_upload"),
    ],
)
def test_weights_need_a_known_architecture_and_honest_format(
    make_client: Callable[..., Any], tmp_path: Path, fields: dict[str, str], code: str
) -> None:
    response = upload(make_client(), mnist_safetensors(), **fields)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == f"urn:nncompress:problem:{code}"
    if code == "unknown_architecture":
        assert "mnist_net" in problem["detail"]
    assert files_under(tmp_path / "storage") == []


def test_weights_that_do_not_fit_the_architecture_are_refused(make_client: Callable[..., Any]) -> None:
    import torch
    from safetensors.torch import save

    data = save({"conv1.weight": torch.zeros(3, 1, 5, 5), "extra": torch.zeros(2)})
    response = upload(make_client(), data, architecture="mnist_net")
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "urn:nncompress:problem:weights_mismatch"
    (detail,) = problem["errors"]
    assert detail["unexpected"] == ["extra"] and "conv2.weight" in detail["missing"]
    assert detail["shape_mismatches"]["conv1.weight"] == {"file": [3, 1, 5, 5], "model": [20, 1, 5, 5]}


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"data": {"architecture": "mnist_net"}},  # no file part
        {"content": b"raw bytes", "headers": {"content-type": "application/octet-stream"}},
        {"files": {"file": ("junk.bin", b"\x00\x01 not a model", "application/octet-stream")}},
        {"files": {"file": ("m.safetensors", b"x")}, "data": {f"field{i}": "v" for i in range(20)}},
    ],
)
def test_bad_upload_bodies_are_clear_422(
    make_client: Callable[..., Any], tmp_path: Path, request_kwargs: Any
) -> None:
    response = make_client().post("/v1/models", **request_kwargs)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert files_under(tmp_path / "storage") == []


def test_unknown_model_is_404_problem(make_client: Callable[..., Any]) -> None:
    client = make_client()
    for response in (
        client.get("/v1/models/0123456789abcdef0123456789abcdef"),
        client.post("/v1/models/nope/preflight", json={"config_list": CONV_HALF}),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "urn:nncompress:problem:not_found"


def test_preflight_reports_channels_kept(make_client: Callable[..., Any]) -> None:
    client = make_client()
    model_id = uploaded_mnist(client)
    response = client.post(
        f"/v1/models/{model_id}/preflight", json={"config_list": CONV_HALF, "pruner": "l1norm"}
    )
    assert response.status_code == 200, response.text
    layers = {layer["name"]: layer for layer in response.json()["layers"]}
    assert (layers["conv1"]["channels"], layers["conv1"]["channels_after"]) == (20, 10)
    assert (layers["conv2"]["channels"], layers["conv2"]["channels_after"]) == (50, 25)


def test_preflight_errors_name_entry_and_key(make_client: Callable[..., Any]) -> None:
    client = make_client()
    model_id = uploaded_mnist(client)
    response = client.post(
        f"/v1/models/{model_id}/preflight",
        json={"config_list": [{"sparse_ratio": 0.5, "op_names": ["conv7"]}]},
    )
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert (error["code"], error["entry"], error["key"]) == ("unknown_layer", 0, "op_names")


def test_preflight_of_a_pickled_model_is_refused_in_the_api(
    make_client: Callable[..., Any], make_settings: Any, tmp_path: Path
) -> None:
    client = make_client(make_settings(allow_pickle=True))
    marker = tmp_path / "pwned"
    response = upload(client, pickle.dumps(MarkerPayload(marker)), filename="m.pkl")
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "pickle"
    response = client.post(
        f"/v1/models/{response.json()['id']}/preflight",
        json={"config_list": CONV_HALF, "input_shape": [1, 1, 28, 28]},
    )
    assert response.status_code == 409
    assert response.json()["type"] == "urn:nncompress:problem:preflight_unavailable"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("data", "filename", "expected"),
    [(mnist_safetensors, "m.safetensors", "safetensors"), (mnist_state_dict_zip, "m.pt", "state_dict")],
)
def test_worker_loads_an_upload_with_its_intake_format(
    make_client: Callable[..., Any], tmp_path: Path, data: Callable[[], bytes], filename: str, expected: str
) -> None:
    """What a worker does with a stored upload: intake's load_model with ``Model.intake_format``."""
    import torch

    from core.db.models import Model
    from nncompress.io.intake import load_model
    from nncompress.models import get

    client = make_client()
    model_id = upload(client, data(), filename=filename, architecture="mnist_net").json()["id"]
    with client.app.state.session_factory() as session:
        row = session.get_one(Model, model_id)
    assert row.format == expected
    net = load_model(
        client.app.state.storage.path(row.storage_key), fmt=row.intake_format, architecture="mnist_net"
    )
    assert net(torch.zeros(2, *get("mnist_net").input_shape[1:])).shape == (2, 10)
