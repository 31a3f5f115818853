"""Library models through the HTTP API to a finished job: a Hugging Face folder (zip or parts) and a
torchvision architecture by name with a custom head (real job processes, embedded dispatcher)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from tests.app.model_files import BERT_FFN_HALF, hf_parts, tiny_bert_folder, zip_folder
from tests.workers.test_intake_formats import make_client, run_job, upload

pytestmark = pytest.mark.slow  # each test runs a real job process


@pytest.fixture
def client(tmp_path: Path, sqlite_url: str) -> Iterator[TestClient]:
    with make_client(tmp_path, sqlite_url) as client:
        yield client


def resnet18_job(model_id: str) -> dict[str, Any]:
    """A job body halving every conv of a resnet18 but its stem, on 32×32 images."""
    return {
        "model_id": model_id,
        "config_list": [
            {"sparse_ratio": 0.5, "op_types": ["Conv2d"]},
            {"exclude": True, "op_names": ["conv1"]},
        ],
        "input_shape": [1, 3, 32, 32],
    }


def test_hf_bert_zip_job_prunes_the_ffn(client: TestClient, tmp_path: Path) -> None:
    model = upload(client, zip_folder(tiny_bert_folder(tmp_path / "bert"), "bert/"), "bert.zip")
    assert model["format"] == "hf_dir" and model["architecture"] is None
    summary = model["summary"]
    assert summary["class_name"] == "BertForSequenceClassification"
    assert summary["input"]["dtype"] == "int64"

    response = client.post(
        "/v1/jobs",
        json={
            "model_id": model["id"],
            "config_list": [{"sparse_ratio": 0.5, "op_names": ["bert.encoder.layer.0.ffn"]}],
        },
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == "unknown_layer"

    job = run_job(client, {"model_id": model["id"], "config_list": BERT_FFN_HALF})
    assert job["status"] == "succeeded", job["error"]
    assert job["spec"]["input_dtype"] == "int64"
    assert job["metrics"]["after"]["params"] < job["metrics"]["before"]["params"]


def test_hf_bert_as_parts_weights_and_config(client: TestClient, tmp_path: Path) -> None:
    folder = tiny_bert_folder(tmp_path / "bert")
    response = client.post(
        "/v1/models",
        files=hf_parts(folder),
    )
    assert response.status_code == 201, response.text
    model: dict[str, Any] = response.json()
    assert model["format"] == "hf_dir"
    job = run_job(client, {"model_id": model["id"], "config_list": BERT_FFN_HALF})
    assert job["status"] == "succeeded", job["error"]


def test_torchvision_resnet18_with_a_10_class_head_by_name(client: TestClient) -> None:
    from safetensors.torch import save
    from torchvision.models import resnet18

    torch.manual_seed(0)
    data = save(resnet18(weights=None, num_classes=10).state_dict())
    model = upload(client, data, "resnet18.safetensors", architecture="torchvision/resnet18")
    assert model["summary"]["num_classes"] == 10 and model["summary"]["library"] == "torchvision"
    job = run_job(client, resnet18_job(model["id"]))
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["after"]["params"] < job["metrics"]["before"]["params"]
