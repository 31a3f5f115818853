"""The model files users really have, through the HTTP API to a finished job (real job processes).

A ``torch.save`` state_dict of a registry architecture, and, on a deployment that allows pickles,
a whole ``torch.save(model)`` in the zip and the legacy format. The embedded dispatcher runs each
job in its own child process, as in production; the state_dict job also runs on PostgreSQL.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from core.settings import Settings
from nncompress.models import get
from tests.workers.conftest import FAST

pytestmark = pytest.mark.slow  # each test runs a real job process (about 10–20 s)

# Small and quick: no ONNX export, two latency runs at batch 1.
QUICK = {"latency_runs": 2, "latency_batch_sizes": [1]}
CONV_HALF = [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}]


def make_client(tmp_path: Path, database_url: str, **overrides: Any) -> TestClient:
    settings = Settings(database_url=database_url, storage_dir=tmp_path / "storage", **FAST, **overrides)
    return TestClient(create_app(settings))


@pytest.fixture
def client(tmp_path: Path, sqlite_url: str) -> Iterator[TestClient]:
    with make_client(tmp_path, sqlite_url) as client:
        yield client


@pytest.fixture
def pickle_client(tmp_path: Path, sqlite_url: str) -> Iterator[TestClient]:
    with make_client(tmp_path, sqlite_url, allow_pickle=True) as client:
        yield client


def saved(obj: object, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def upload(client: TestClient, data: bytes, filename: str, **fields: str) -> dict[str, Any]:
    response = client.post(
        "/v1/models", files={"file": (filename, data, "application/octet-stream")}, data=fields
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def run_job(client: TestClient, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Submits a job and polls it (with a deadline) until it finishes."""
    response = client.post("/v1/jobs", json={"options": QUICK, "export_onnx": False, **body})
    assert response.status_code == 202, response.text
    location = response.headers["Location"]
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(location).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} ({job['stage']})"
        time.sleep(0.05)


def mnist() -> torch.nn.Module:
    torch.manual_seed(0)
    return get("mnist_net").build().eval()


@pytest.mark.parametrize("database", ["sqlite_url", "pg_url"])
def test_state_dict_job_succeeds(tmp_path: Path, request: pytest.FixtureRequest, database: str) -> None:
    # Given torch.save(model.state_dict()) of a registry architecture, the job loads it as weights.
    with make_client(tmp_path, request.getfixturevalue(database)) as client:
        model = upload(client, saved(mnist().state_dict()), "weights.pt", architecture="mnist_net")
        assert model["format"] == "state_dict"
        job = run_job(client, {"model_id": model["id"], "config_list": CONV_HALF})
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["after"]["params"] < job["metrics"]["before"]["params"]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_whole_pickled_module_runs_when_pickles_are_allowed(pickle_client: TestClient, legacy: bool) -> None:
    data = saved(mnist(), _use_new_zipfile_serialization=not legacy)
    model = upload(pickle_client, data, "model.pt")
    assert model["format"] == "pickle" and model["architecture"] is None
    job = run_job(
        pickle_client, {"model_id": model["id"], "config_list": CONV_HALF, "input_shape": [1, 1, 28, 28]}
    )
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["after"]["params"] < job["metrics"]["before"]["params"]


def test_pickled_module_is_refused_at_upload_without_allow_pickle(client: TestClient) -> None:
    for data in (saved(mnist()), saved(mnist(), _use_new_zipfile_serialization=False)):
        response = client.post("/v1/models", files={"file": ("m.pt", data, "application/octet-stream")})
        assert response.status_code == 422, response.text
        assert response.json()["type"] == "urn:nncompress:problem:pickle_disabled"


def test_onnx_zip_with_external_data_job_succeeds(client: TestClient, tmp_path: Path) -> None:
    from tests.app.model_files import onnx_with_external_data, zip_of

    path, data = onnx_with_external_data(tmp_path)
    archive = zip_of({"export/model.onnx": path.read_bytes(), "export/model.onnx.data": data.read_bytes()})
    model = upload(client, archive, "model.zip")
    assert model["format"] == "onnx_zip" and model["summary"]["external_data"] == ["model.onnx.data"]
    job = run_job(
        client, {"model_id": model["id"], "config_list": [{"sparse_ratio": 0.5, "op_names": ["conv1"]}]}
    )
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["after"]["params"] < job["metrics"]["before"]["params"]


def test_onnx_zip_missing_its_data_file_is_refused(client: TestClient, tmp_path: Path) -> None:
    from tests.app.model_files import onnx_with_external_data, zip_of

    path, _ = onnx_with_external_data(tmp_path)
    response = client.post("/v1/models", files={"file": ("m.zip", zip_of({"model.onnx": path.read_bytes()}))})
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "urn:nncompress:problem:onnx_external_data"
    assert response.json()["errors"][0]["missing"] == ["model.onnx.data"]
