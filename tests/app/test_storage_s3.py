"""Object storage against a real S3-protocol server (moto's, started by the suite): multipart uploads
streamed and hashed, aborted on refusal and 413, presigned and streamed downloads, the bounded cache."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from core.settings import Settings
from core.storage import open_storage
from core.storage_s3 import STALE_UPLOAD_SECONDS, S3Storage, S3TempWrite, make_client
from tests.app.factories import finished_job, mnist_safetensors, upload, uploaded_mnist
from tests.s3_server import S3Bucket

MiB = 1 << 20
PART = 5 * MiB  # S3's smallest part


def _storage(bucket: S3Bucket, root: Path, **kwargs: Any) -> S3Storage:
    return S3Storage(root, client=make_client(), bucket=bucket.name, prefix=f"{bucket.prefix}/", **kwargs)


def _payload(size: int) -> bytes:
    return hashlib.sha256(str(size).encode()).digest() * (size // 32) + b"x" * (size % 32)


def _write(temp: S3TempWrite, data: bytes, chunk: int = 64 * 1024) -> None:
    for start in range(0, len(data), chunk):
        temp.write(data[start : start + chunk])


def test_upload_streams_in_parts_and_lands_under_its_key(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    storage = _storage(s3_bucket, tmp_path / "cache", part_bytes=PART)
    data = _payload(12 * MiB + 123)  # three parts: 5 + 5 + 2 MiB
    temp = storage.temp_write(limit=64 * MiB)
    _write(temp, data)
    assert temp.upload_id is not None  # parts went out while bytes arrived
    assert [u["Key"] for u in s3_bucket.multipart_uploads()] == [temp.staging_key]
    temp.close()
    storage.commit(temp, "models/m1/upload.bin")

    assert temp.sha256 == hashlib.sha256(data).hexdigest() and temp.size == len(data)
    assert s3_bucket.get("models/m1/upload.bin") == data
    assert s3_bucket.keys() == ["models/m1/upload.bin"]  # the staging object is gone
    assert s3_bucket.multipart_uploads() == []
    # The scratch copy intake read became the cached copy; nothing else is left locally.
    assert (tmp_path / "cache/models/m1/upload.bin").read_bytes() == data
    assert list((tmp_path / "cache/tmp").iterdir()) == []


def test_a_file_below_one_part_is_put_whole(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    storage = _storage(s3_bucket, tmp_path / "cache", part_bytes=PART)
    temp = storage.temp_write(limit=MiB)
    _write(temp, b"small" * 100)
    temp.close()
    storage.commit(temp, "datasets/d1/file.bin")
    assert temp.upload_id is None
    assert s3_bucket.get("datasets/d1/file.bin") == b"small" * 100


def test_discard_aborts_the_multipart_upload(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    storage = _storage(s3_bucket, tmp_path / "cache", part_bytes=PART)
    temp = storage.temp_write(limit=64 * MiB)
    _write(temp, _payload(6 * MiB))
    assert len(s3_bucket.multipart_uploads()) == 1
    temp.discard()
    temp.discard()  # idempotent
    assert s3_bucket.multipart_uploads() == [] and s3_bucket.keys() == []
    assert not temp.path.exists()


def test_sweep_aborts_uploads_a_killed_process_left(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    storage = _storage(s3_bucket, tmp_path / "cache", part_bytes=PART)
    storage.ensure_dirs()
    temp = storage.temp_write(limit=64 * MiB)
    _write(temp, _payload(6 * MiB))  # and the process dies: nobody discards it
    assert storage.sweep_partial_uploads() == 0  # younger than this process: maybe another replica's
    removed = storage.sweep_partial_uploads(before=time.time() + STALE_UPLOAD_SECONDS + 60)
    assert removed == 2  # the multipart upload and the scratch file
    assert s3_bucket.multipart_uploads() == [] and not temp.path.exists()


def test_cached_copies_stay_within_the_bound(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    source = _storage(s3_bucket, tmp_path / "writer")
    for name in ("a", "b"):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(name.encode() * 2000)
        source.publish(path, f"jobs/j1/{name}.bin")
    reader = _storage(s3_bucket, tmp_path / "reader", cache_max_bytes=3000)
    a = reader.local_path("jobs/j1/a.bin")
    assert a.read_bytes() == b"a" * 2000
    b = reader.local_path("jobs/j1/b.bin")
    assert b.read_bytes() == b"b" * 2000
    assert not a.exists() and reader.cached_bytes() == 2000  # the least recently used copy went
    assert reader.local_path("jobs/j1/a.bin").read_bytes() == b"a" * 2000  # fetched again
    with pytest.raises(FileNotFoundError):
        reader.local_path("jobs/j1/missing.bin")


def test_storage_url_is_checked() -> None:
    with pytest.raises(ValidationError, match="s3://bucket/prefix"):
        Settings(storage_url="s3:/no-bucket")
    assert Settings(storage_url="").storage_url is None


# -- through the API ---------------------------------------------------------------------------------


@pytest.fixture
def s3_settings(s3_bucket: S3Bucket, make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    return make_settings(storage_url=s3_bucket.url, cache_dir=tmp_path / "cache", s3_part_bytes=PART)


@pytest.fixture
def s3_client(make_client: Callable[..., TestClient], s3_settings: Settings) -> Iterator[TestClient]:
    yield make_client(s3_settings)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_api_upload_goes_to_the_bucket_not_the_storage_folder(
    s3_client: TestClient, s3_bucket: S3Bucket, s3_settings: Settings
) -> None:
    data = mnist_safetensors()
    response = upload(s3_client, data, architecture="mnist_net")
    assert response.status_code == 201, response.text
    model_id = response.json()["id"]
    assert s3_bucket.get(f"models/{model_id}/upload.bin") == data
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert _files(s3_settings.storage_dir) == []
    body = {"config_list": [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}]}
    assert s3_client.post(f"/v1/models/{model_id}/preflight", json=body).status_code == 200


def _chunked_multipart(data: bytes, chunk: int = 256 * 1024) -> tuple[Iterator[bytes], str]:
    """A multipart body sent without Content-Length, so only the streamed count can trip the limit."""
    boundary = "s3-test-boundary"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="architecture"\r\n\r\nmnist_net\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for start in range(0, len(data), chunk):
            yield data[start : start + chunk]
        yield f"\r\n--{boundary}--\r\n".encode()

    return body(), f"multipart/form-data; boundary={boundary}"


def test_api_upload_over_the_limit_aborts_its_multipart_upload(
    make_client: Callable[..., TestClient], s3_settings: Settings, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    limit = 8 * MiB  # above one part, so a multipart upload was under way when the limit tripped
    client = make_client(s3_settings.model_copy(update={"max_upload_bytes": limit}))
    body, content_type = _chunked_multipart(_payload(20 * MiB))
    response = client.post("/v1/models", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 413, response.text
    assert response.json()["type"].endswith("upload_too_large")
    assert s3_bucket.multipart_uploads() == [] and s3_bucket.keys() == []
    assert _files(tmp_path / "cache") == [] and _files(s3_settings.storage_dir) == []


def _published_job(client: TestClient, files: dict[str, tuple[bytes, str]]) -> str:
    """A succeeded job whose artifacts a worker published to the bucket (no copy left in the cache)."""
    storage = client.app.state.storage  # type: ignore[attr-defined]
    model_id = uploaded_mnist(client)
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        job = finished_job(session, storage, model_id, files)  # writes the files where the job would
    for name in files:
        path = storage.path(f"jobs/{job.id}/{name}")
        storage.publish(path, f"jobs/{job.id}/{name}")
        os.unlink(path)
    return str(job.id)


def test_download_is_streamed_from_the_store_with_ranges(s3_client: TestClient) -> None:
    data = _payload(100_000)
    job_id = _published_job(s3_client, {"model.onnx": (data, "application/onnx")})
    response = s3_client.get(f"/v1/jobs/{job_id}/artifacts/model.onnx")
    assert response.status_code == 200 and response.content == data
    assert response.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    ranged = s3_client.get(f"/v1/jobs/{job_id}/artifacts/model.onnx", headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == data[10:20]


def test_presigned_download_redirects_to_the_same_bytes(
    make_client: Callable[..., TestClient], s3_settings: Settings
) -> None:
    client = make_client(s3_settings.model_copy(update={"download_redirect_seconds": 60}))
    data = _payload(50_000)
    job_id = _published_job(client, {"model.onnx": (data, "application/onnx")})
    response = client.get(f"/v1/jobs/{job_id}/artifacts/model.onnx", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert response.headers["cache-control"] == "no-store"
    fetched = httpx.get(response.headers["location"])  # no API key: the signature is the credential
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["content-disposition"] == 'attachment; filename="model.onnx"'
    assert fetched.headers["content-type"] == "application/onnx"
    etag = response.headers["etag"]
    assert (
        client.get(f"/v1/jobs/{job_id}/artifacts/model.onnx", headers={"If-None-Match": etag}).status_code
        == 304
    )


def test_local_storage_ignores_the_redirect_setting(
    make_client: Callable[..., TestClient], make_settings: Any
) -> None:
    client = make_client(make_settings(download_redirect_seconds=60))
    assert (
        open_storage(client.app.state.settings).presigned_url(  # type: ignore[attr-defined]
            "jobs/x/a", expires_seconds=60, filename="a", media_type="text/plain"
        )
        is None
    )
    data = b"local bytes"
    storage = client.app.state.storage  # type: ignore[attr-defined]
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        job = finished_job(session, storage, uploaded_mnist(client), {"a.txt": (data, "text/plain")})
    response = client.get(f"/v1/jobs/{job.id}/artifacts/a.txt", follow_redirects=False)
    assert response.status_code == 200 and response.content == data


def test_an_unreachable_store_is_a_503_and_leaves_nothing_behind(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    client = make_client(make_settings(storage_url="s3://nowhere/nncompress", cache_dir=tmp_path / "cache"))
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert [e["component"] for e in ready.json()["errors"]] == ["storage"]
    response = upload(client, mnist_safetensors(), architecture="mnist_net")
    assert response.status_code == 503, response.text
    assert response.json()["type"].endswith("storage_unavailable")
    assert _files(tmp_path / "cache") == []


def test_api_dataset_parts_go_to_the_bucket(
    s3_client: TestClient, s3_bucket: S3Bucket, s3_settings: Settings
) -> None:
    from tests.app.dataset_files import idx_bytes, mnist_arrays, upload_dataset

    x, y = mnist_arrays(200)
    images, labels = idx_bytes(x, gz=True), idx_bytes(y.astype("uint8"), gz=False)
    response = upload_dataset(s3_client, {"file": ("images.gz", images), "labels": ("labels", labels)})
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    assert s3_bucket.get(f"datasets/{dataset_id}/file.bin") == images
    assert s3_bucket.get(f"datasets/{dataset_id}/labels.bin") == labels
    assert s3_bucket.multipart_uploads() == [] and _files(s3_settings.storage_dir) == []
