"""GET /v1/jobs/{id}/artifacts/{name}: streamed bytes, content type, file name, ETag, Range."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.db.models import Job
from tests.app.factories import finished_job, job_body, uploaded_mnist

DATA = bytes(range(256)) * 40  # 10,240 bytes, every offset distinguishable


@pytest.fixture
def client(make_client: Callable[..., Any]) -> TestClient:
    return make_client()


def make_job(client: TestClient, status: str = "succeeded") -> Job:
    model_id = uploaded_mnist(client)
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        files = {
            "model.onnx": (DATA, "application/onnx"),
            "report.json": (b'{"ok": true}', "application/json"),
        }
        return finished_job(session, client.app.state.storage, model_id, files, status=status)  # type: ignore[attr-defined]


def test_job_lists_its_artifacts_and_full_download_matches(client: TestClient) -> None:
    job = make_job(client)
    listed = {a["name"]: a for a in client.get(f"/v1/jobs/{job.id}").json()["artifacts"]}
    assert listed["model.onnx"] == {
        "name": "model.onnx",
        "size_bytes": len(DATA),
        "sha256": hashlib.sha256(DATA).hexdigest(),
        "media_type": "application/onnx",
        "url": f"/v1/jobs/{job.id}/artifacts/model.onnx",
    }
    response = client.get(listed["model.onnx"]["url"])
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-type"] == "application/onnx"
    assert response.headers["content-disposition"] == 'attachment; filename="model.onnx"'
    assert response.headers["etag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert client.get(listed["report.json"]["url"]).json() == {"ok": True}


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=10000-", 10000, len(DATA) - 1),
        ("bytes=-40", len(DATA) - 40, len(DATA) - 1),
        ("bytes=10200-99999", 10200, len(DATA) - 1),
    ],
)
def test_single_range_is_206_with_content_range(
    client: TestClient, header: str, start: int, end: int
) -> None:
    job = make_job(client)
    response = client.get(f"/v1/jobs/{job.id}/artifacts/model.onnx", headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert response.content == DATA[start : end + 1]


def test_unsatisfiable_and_malformed_ranges(client: TestClient) -> None:
    url = f"/v1/jobs/{make_job(client).id}/artifacts/model.onnx"
    response = client.get(url, headers={"Range": f"bytes={len(DATA)}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"
    assert response.json()["type"] == "urn:nncompress:problem:range_not_satisfiable"
    response = client.get(url, headers={"Range": "bytes=9-3"})
    assert (response.status_code, response.json()["type"]) == (400, "urn:nncompress:problem:invalid_range")


def test_if_none_match_with_the_sha256_is_304(client: TestClient) -> None:
    url = f"/v1/jobs/{make_job(client).id}/artifacts/model.onnx"
    etag = client.get(url).headers["etag"]
    response = client.get(url, headers={"If-None-Match": etag})
    assert response.status_code == 304 and response.content == b""


def test_unfinished_or_failed_job_has_no_downloads(client: TestClient) -> None:
    queued = client.post("/v1/jobs", json=job_body(uploaded_mnist(client))).json()["id"]
    response = client.get(f"/v1/jobs/{queued}/artifacts/model.onnx")
    assert (response.status_code, response.json()["type"]) == (409, "urn:nncompress:problem:job_not_finished")
    failed = make_job(client, status="failed")
    response = client.get(f"/v1/jobs/{failed.id}/artifacts/model.onnx")
    assert (response.status_code, response.json()["type"]) == (
        409,
        "urn:nncompress:problem:job_not_succeeded",
    )


def test_unknown_artifact_name_is_404_and_lists_the_real_ones(client: TestClient) -> None:
    job = make_job(client)
    for name in ("nope.bin", "..%2F..%2Fetc%2Fpasswd"):
        response = client.get(f"/v1/jobs/{job.id}/artifacts/{name}")
        assert response.status_code == 404
        assert response.json()["type"] == "urn:nncompress:problem:not_found"
    assert "model.onnx" in client.get(f"/v1/jobs/{job.id}/artifacts/nope.bin").json()["detail"]
