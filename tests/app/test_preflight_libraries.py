"""POST /v1/models/{id}/preflight for Hugging Face folders (zip or parts, transformers or timm) and
ONNX zips with external data: built from the stored config / converted from the stored parts in the
API process, bounded by a parameter limit (409 with the reason above it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.app.factories import upload
from tests.app.model_files import (
    BERT_FFN_HALF,
    hf_parts,
    onnx_with_external_data,
    timm_resnet18_folder,
    tiny_bert_folder,
    zip_folder,
    zip_of,
)

pytest.importorskip("transformers")
pytest.importorskip("timm")


def uploaded(client: Any, data: bytes, filename: str) -> dict[str, Any]:
    response = upload(client, data, filename=filename)
    assert response.status_code == 201, response.text
    return dict(response.json())


def layers_of(response: Any) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {layer["name"]: layer for layer in response.json()["layers"]}


def test_hf_zip_preflight_halves_the_ffn(make_client: Callable[..., Any], tmp_path: Path) -> None:
    client = make_client()
    model = uploaded(client, zip_folder(tiny_bert_folder(tmp_path / "bert")), "bert.zip")
    assert model["format"] == "hf_dir"
    response = client.post(f"/v1/models/{model['id']}/preflight", json={"config_list": BERT_FFN_HALF})
    layers = layers_of(response)
    ffn = layers["bert.encoder.layer.0.intermediate.dense"]
    assert (ffn["channels"], ffn["channels_after"]) == (64, 32)
    assert "bert.encoder.layer.1.intermediate.dense" in layers


def test_hf_parts_preflight(make_client: Callable[..., Any], tmp_path: Path) -> None:
    client = make_client()
    folder = tiny_bert_folder(tmp_path / "bert")
    response = client.post(
        "/v1/models",
        files=hf_parts(folder),
    )
    assert response.status_code == 201, response.text
    response = client.post(
        f"/v1/models/{response.json()['id']}/preflight", json={"config_list": BERT_FFN_HALF}
    )
    assert layers_of(response)["bert.encoder.layer.1.intermediate.dense"]["channels_after"] == 32


def test_hf_preflight_names_an_unknown_layer(make_client: Callable[..., Any], tmp_path: Path) -> None:
    client = make_client()
    model = uploaded(client, zip_folder(tiny_bert_folder(tmp_path / "bert")), "bert.zip")
    response = client.post(
        f"/v1/models/{model['id']}/preflight",
        json={"config_list": [{"sparse_ratio": 0.5, "op_names": ["bert.encoder.layer.0.ffn"]}]},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == "unknown_layer"


def test_timm_folder_preflight(make_client: Callable[..., Any], tmp_path: Path) -> None:
    folder = tmp_path / "r18"
    timm_resnet18_folder(folder, num_classes=10)
    client = make_client()
    model = uploaded(client, zip_folder(folder), "resnet18.zip")
    response = client.post(
        f"/v1/models/{model['id']}/preflight",
        json={
            "config_list": [{"sparse_ratio": 0.5, "op_names": ["layer1.0.conv1"]}],
            "input_shape": [1, 3, 32, 32],
        },
    )
    conv = layers_of(response)["layer1.0.conv1"]
    assert (conv["channels"], conv["channels_after"]) == (64, 32)


def test_onnx_zip_preflight_uses_its_external_data(make_client: Callable[..., Any], tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    onnx_path, data_path = onnx_with_external_data(folder)
    client = make_client()
    data = zip_of(
        {"export/model.onnx": onnx_path.read_bytes(), "export/model.onnx.data": data_path.read_bytes()}
    )
    model = uploaded(client, data, "model.zip")
    assert model["format"] == "onnx_zip"
    response = client.post(
        f"/v1/models/{model['id']}/preflight",
        json={"config_list": [{"sparse_ratio": 0.5, "op_names": ["conv1"]}]},
    )
    conv = layers_of(response)["conv1"]
    assert (conv["channels"], conv["channels_after"]) == (8, 4)
    assert list((tmp_path / "storage" / "tmp").iterdir()) == []  # the extracted files are gone


@pytest.mark.parametrize("kind", ["hf_dir", "onnx_zip"])
def test_preflight_above_the_parameter_limit_is_409_with_the_reason(
    make_client: Callable[..., Any], make_settings: Callable[..., Any], tmp_path: Path, kind: str
) -> None:
    client = make_client(make_settings(preflight_max_params=100))
    if kind == "hf_dir":
        data, config = zip_folder(tiny_bert_folder(tmp_path / "bert")), BERT_FFN_HALF
    else:
        folder = tmp_path / "export"
        folder.mkdir()
        onnx_path, data_path = onnx_with_external_data(folder)
        data = zip_of({"model.onnx": onnx_path.read_bytes(), "model.onnx.data": data_path.read_bytes()})
        config = [{"sparse_ratio": 0.5, "op_names": ["conv1"]}]
    model = uploaded(client, data, "model.zip")
    response = client.post(f"/v1/models/{model['id']}/preflight", json={"config_list": config})
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["type"] == "urn:nncompress:problem:preflight_unavailable"
    assert "preflight limit of 100" in body["detail"] and "POST /v1/jobs" in body["detail"]
    assert body["errors"][0]["limit"] == 100 and body["errors"][0]["parameters"] > 100
