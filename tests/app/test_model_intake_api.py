"""Intake at the door: what can never run is refused at upload (or at POST /v1/jobs), with the fix.

Every refusal is a 422 problem with a stable ``type`` and leaves nothing in storage.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.app.factories import mnist_state_dict_zip, upload
from tests.app.model_files import onnx_bytes, onnx_with_external_data, onnx_with_op, pt2_bytes, zip_of

PROBLEM = "application/problem+json"


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp")


def problem(response: Any, code: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:nncompress:problem:{code}", body
    return body


def test_pt2_is_refused_naming_the_routes_that_work(make_client: Callable[..., Any], tmp_path: Path) -> None:
    body = problem(upload(make_client(), pt2_bytes(), filename="m.pt2"), "unsupported_model_format")
    assert "dynamo=False" in body["detail"] and "safetensors" in body["detail"]
    assert {r["route"] for r in body["errors"][0]["routes"]} == {"onnx", "weights"}
    assert files_under(tmp_path / "storage") == []


def test_onnx_with_an_unsupported_op_is_refused_listing_it(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    body = problem(
        upload(make_client(), onnx_with_op("StringNormalizer"), filename="m.onnx"), "unsupported_onnx_ops"
    )
    (error,) = body["errors"]
    assert error["ops"] == ["StringNormalizer"] and "dynamo=False" in error["hint"]
    assert "StringNormalizer" in body["detail"]
    assert files_under(tmp_path / "storage") == []


def test_onnx_with_external_data_uploaded_alone_says_to_zip_it(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    path, _ = onnx_with_external_data(folder)
    body = problem(upload(make_client(), path.read_bytes(), filename="model.onnx"), "onnx_external_data")
    assert body["errors"][0]["external_data"] == ["model.onnx.data"]
    assert "zip" in body["detail"]


def test_state_dict_for_another_architecture_is_refused(make_client: Callable[..., Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(3, 1, 5, 5), "extra": torch.zeros(2)}, buffer)
    body = problem(
        upload(make_client(), buffer.getvalue(), filename="w.pt", architecture="mnist_net"),
        "weights_mismatch",
    )
    (detail,) = body["errors"]
    assert detail["unexpected"] == ["extra"] and "conv2.weight" in detail["missing"]
    assert detail["shape_mismatches"]["conv1.weight"] == {"file": [3, 1, 5, 5], "model": [20, 1, 5, 5]}


def test_state_dict_summary_shows_input_and_layers(make_client: Callable[..., Any]) -> None:
    client = make_client()
    response = upload(client, mnist_state_dict_zip(), filename="w.pt", architecture="mnist_net")
    assert response.status_code == 201, response.text
    summary = client.get(f"/v1/models/{response.json()['id']}").json()["summary"]
    assert summary["input"] == {"shape": [1, 1, 28, 28], "dtype": "float32"}
    assert summary["layer_count"] > 0 and summary["num_classes"] == 10


def test_a_self_describing_model_takes_no_architecture(make_client: Callable[..., Any]) -> None:
    response = upload(make_client(), onnx_bytes(), filename="m.onnx", architecture="mnist_net")
    assert problem(response, "invalid_upload")["errors"][0]["field"] == "architecture"


def test_onnx_summary_gives_the_job_its_input_and_checks_layer_names(make_client: Callable[..., Any]) -> None:
    client = make_client()
    response = upload(client, onnx_bytes(), filename="m.onnx")
    assert response.status_code == 201, response.text
    model = response.json()
    summary = client.get(f"/v1/models/{model['id']}").json()["summary"]
    assert summary["source"] == "onnx" and summary["input"] == {"shape": [1, 3, 16, 16], "dtype": "float32"}
    assert "layers" not in summary and summary["layer_count"] >= 3

    # No input_shape needed: it comes from the ONNX input.
    ok = client.post(
        "/v1/jobs",
        json={"model_id": model["id"], "config_list": [{"sparse_ratio": 0.5, "op_names": ["conv1"]}]},
    )
    assert ok.status_code == 202, ok.text
    assert client.get(ok.headers["Location"]).json()["spec"]["input_shape"] == [1, 3, 16, 16]

    bad = client.post(
        "/v1/jobs",
        json={"model_id": model["id"], "config_list": [{"sparse_ratio": 0.5, "op_names": ["conv3"]}]},
    )
    body = problem(bad, "unknown_layer")
    (error,) = body["errors"]
    assert (error["entry"], error["key"], error["value"]) == (0, "op_names", "conv3")
    assert {"conv1", "conv2"} <= set(error["suggestions"])


def test_onnx_zip_without_the_onnx_file_is_refused(make_client: Callable[..., Any]) -> None:
    response = upload(make_client(), zip_of({"weights.bin": b"\x00" * 16}), filename="m.zip")
    assert problem(response, "invalid_upload")["detail"].startswith("the zip archive holds neither")


@pytest.mark.parametrize("legacy", [False, True])
def test_pickled_modules_need_allow_pickle(make_client: Callable[..., Any], legacy: bool) -> None:
    from tests.app.model_files import tiny_cnn

    buffer = io.BytesIO()
    torch.save(tiny_cnn(), buffer, _use_new_zipfile_serialization=not legacy)
    response = upload(make_client(), buffer.getvalue(), filename="m.pt")
    assert response.status_code == 422 and response.json()["type"] == "urn:nncompress:problem:pickle_disabled"


def test_architectures_lists_the_installed_library_families(make_client: Callable[..., Any]) -> None:
    body = make_client().get("/v1/architectures").json()
    families = {f["library"]: f for f in body["libraries"]}
    assert families["torchvision"]["installed"] and families["torchvision"]["prefix"] == "torchvision/"
    assert families["timm"]["count"] > 100 and "transformers" in families


def test_token_id_onnx_jobs_get_int64_inputs(make_client: Callable[..., Any]) -> None:
    from tests.app.model_files import token_onnx_bytes

    client = make_client()
    model = upload(client, token_onnx_bytes(), filename="tokens.onnx").json()
    assert model["summary"]["input"] == {"shape": [1, 8], "dtype": "int64"}
    response = client.post(
        "/v1/jobs", json={"model_id": model["id"], "config_list": [{"sparse_ratio": 0.5, "op_names": ["fc"]}]}
    )
    assert response.status_code == 202, response.text
    spec = client.get(response.headers["Location"]).json()["spec"]
    assert (spec["input_shape"], spec["input_dtype"]) == ([1, 8], "int64")
