"""A job on a Hugging Face or timm folder upload leaves an artifact that reloads without the service:
the job's ``checks.reload`` proves it, and the downloaded manifest + weights rebuild the model here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from nncompress.io import load_compressed
from tests.app.model_files import BERT_FFN_HALF, timm_resnet18_folder, tiny_bert_folder, zip_folder
from tests.workers.test_intake_formats import make_client, run_job, upload
from tests.workers.test_intake_libraries import resnet18_job

pytestmark = pytest.mark.slow  # each test runs a real job process


@pytest.fixture
def client(tmp_path: Path, sqlite_url: str) -> Iterator[TestClient]:
    with make_client(tmp_path, sqlite_url) as client:
        yield client


def download(client: TestClient, job_id: str, names: tuple[str, ...], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        response = client.get(f"/v1/jobs/{job_id}/artifacts/{name}")
        assert response.status_code == 200, response.text
        (folder / name).write_bytes(response.content)
    return folder


def test_hf_bert_job_artifact_reloads_with_the_pruned_ffn(client: TestClient, tmp_path: Path) -> None:
    model = upload(client, zip_folder(tiny_bert_folder(tmp_path / "bert"), "bert/"), "bert.zip")
    job = run_job(client, {"model_id": model["id"], "config_list": BERT_FFN_HALF})
    assert job["status"] == "succeeded", job["error"]
    reload = job["result"]["checks"]["reload"]
    assert reload == {"max_abs_diff": 0.0, "architecture": "hf/BertForSequenceClassification"}
    assert job["result"]["architecture"] == "hf/BertForSequenceClassification"

    folder = download(client, job["id"], ("manifest.json", "model.safetensors"), tmp_path / "artifact")
    reloaded = load_compressed(folder)
    ffn = dict(reloaded.named_modules())["bert.encoder.layer.1.intermediate.dense"]
    assert ffn.out_features == 32  # 64 halved; the config still says 64, the kept indices did it
    with torch.inference_mode():
        logits = reloaded(torch.randint(0, 128, (2, 16)))
    assert logits.shape == (2, 3)


def test_timm_folder_job_artifact_reloads(client: TestClient, tmp_path: Path) -> None:
    folder = tmp_path / "r18"
    timm_resnet18_folder(folder, num_classes=10)
    model = upload(client, zip_folder(folder, "bert/"), "resnet18.zip")
    assert model["format"] == "hf_dir"
    job = run_job(client, resnet18_job(model["id"]))
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["checks"]["reload"]["architecture"] == "timm/resnet18"
    reloaded = load_compressed(
        download(client, job["id"], ("manifest.json", "model.safetensors"), tmp_path / "a")
    )
    assert reloaded(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert job["metrics"]["after"]["params"] == sum(p.numel() for p in reloaded.parameters())
