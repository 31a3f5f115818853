"""Data set uploads cannot make the API decode what they declare: bombs are refused from headers.

The acceptance test runs the real app under uvicorn in a process of its own and reads that
process's peak resident memory (``VmHWM`` in ``/proc/<pid>/status``, reset through ``clear_refs``
just before the uploads) while it refuses two compressed bombs built here: a zip of 4096x4096
black PNGs in the ImageFolder layout (a few KiB), and a gzip idx pair of about 1 MiB whose header
declares a gigabyte. Before the streaming validation, these cost the API 5.8 and 5.1 GiB.

The other tests check each cap on its own (a setting, 413, a ``type`` naming it, the maximum in
``errors``), Pillow's own bomb guard, and that the job's loader enforces the same caps.
"""

from __future__ import annotations

import gzip
import io
import os
import socket
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.dataset_limits import dataset_limits
from nncompress.datasets import DatasetLimitError, load_dataset, load_mnist_idx
from tests.app.dataset_files import idx_bytes, imagefolder_zip, mnist_arrays, npz_bytes, upload_dataset

PROBLEM = "urn:nncompress:problem:"
MiB = 1 << 20


# -- the bombs ---------------------------------------------------------------------------------------


def black_png_zip(size: int, count: int) -> bytes:
    """An ImageFolder zip of ``count`` black ``size`` x ``size`` grayscale PNGs in two classes."""
    png = io.BytesIO()
    Image.new("L", (size, size)).save(png, format="PNG", compress_level=9)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(count):
            zf.writestr(f"class_{i % 2}/{i}.png", png.getvalue())
    return buffer.getvalue()


def gzip_idx_bomb(dims: tuple[int, ...]) -> bytes:
    """A gzip idx file of zeros whose header declares ``dims`` (uint8), compressed as it is built."""
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip wrapper
    out = [packer.compress(header)]
    remaining, zeros = int(np.prod(dims)), bytes(MiB)
    while remaining:
        out.append(packer.compress(zeros[: min(MiB, remaining)]))
        remaining -= min(MiB, remaining)
    out.append(packer.flush())
    return b"".join(out)


# -- the API in a process of its own ------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


class ServedApi:
    """uvicorn serving ``app.main:create_app`` on a socket bound here, in a child process."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process, self.base = process, f"http://127.0.0.1:{port}"

    def reset_peak(self) -> int:
        """Resets the process's peak RSS to its current RSS (``clear_refs`` 5); the RSS, in bytes."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        return _status_kib(self.process.pid, "VmRSS") * 1024

    def peak(self) -> int:
        return _status_kib(self.process.pid, "VmHWM") * 1024

    def upload(self, files: dict[str, tuple[str, bytes]]) -> httpx.Response:
        parts = {role: (name, data, "application/octet-stream") for role, (name, data) in files.items()}
        return httpx.post(f"{self.base}/v1/datasets", files=parts, timeout=300)


@pytest.fixture
def served_api(tmp_path: Path, sqlite_url: str) -> Iterator[ServedApi]:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/<pid>/clear_refs to reset the peak RSS")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    env = {
        **os.environ,
        "NNCOMPRESS_DATABASE_URL": sqlite_url,
        "NNCOMPRESS_STORAGE_DIR": str(tmp_path / "storage"),
        "NNCOMPRESS_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--fd", str(sock.fileno())],
        env=env,
        pass_fds=[sock.fileno()],
    )
    sock.close()
    api = ServedApi(process, port)
    try:
        deadline = time.monotonic() + 180  # an upper bound for imports and migrations, not a race
        while True:
            assert process.poll() is None, "the API process exited"
            try:
                if httpx.get(f"{api.base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_compressed_bombs_cost_the_api_under_64_mib(served_api: ServedApi) -> None:
    # Valid uploads of each format first, so that what the first request imports and caches is
    # not counted as the bombs' cost.
    x, y = mnist_arrays(20)
    for files in (
        {"file": ("warm.npz", npz_bytes(x=x, y=y))},
        {"file": ("warm.zip", imagefolder_zip(x, y))},
        {"file": ("i.gz", idx_bytes(x, gz=True)), "labels": ("l.gz", idx_bytes(y.astype(np.uint8), gz=True))},
    ):
        assert served_api.upload(files).status_code == 201
    png_bomb = black_png_zip(4096, 8)
    n = 1_000_000  # 1e6 x 32 x 32 bytes of zeros: a gigabyte in about 1 MiB of gzip
    idx_bomb = {
        "file": ("train-images-idx3-ubyte.gz", gzip_idx_bomb((n, 32, 32))),
        "labels": ("train-labels-idx1-ubyte.gz", gzip_idx_bomb((n,))),
    }
    assert len(png_bomb) < 64 * 1024 and len(idx_bomb["file"][1]) < 2 * MiB

    rss = served_api.reset_peak()
    refused = [served_api.upload({"file": ("bomb.zip", png_bomb)}), served_api.upload(idx_bomb)]
    growth = served_api.peak() - rss
    print(f"API peak RSS growth for the two bombs: {growth / MiB:.1f} MiB")

    for response, cap in zip(refused, ("max_image_pixels", "max_decoded_bytes"), strict=True):
        assert response.status_code == 413, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == f"{PROBLEM}dataset_{cap}_exceeded"
    assert growth < 64 * MiB, f"the API's peak RSS grew by {growth / MiB:.1f} MiB"


# -- each cap: a setting, 413, a type naming it ------------------------------------------------------


@pytest.fixture
def client_with(make_client: Callable[..., Any], make_settings: Any) -> Callable[..., TestClient]:
    return lambda **settings: make_client(make_settings(**settings))  # type: ignore[no-any-return]


def _rgb_zip(size: int, count: int) -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(count):
            png = io.BytesIO()
            Image.fromarray(noise, mode="RGB").save(png, format="PNG")
            zf.writestr(f"c{i % 2}/{i}.png", png.getvalue())
    return buffer.getvalue()


def _idx_pair(x: np.ndarray, y: np.ndarray) -> dict[str, tuple[str, bytes]]:
    return {
        "file": ("i.gz", idx_bytes(x, gz=True)),
        "labels": ("l.gz", idx_bytes(y.astype(np.uint8), gz=True)),
    }


CAPS: dict[str, tuple[dict[str, Any], Callable[[], dict[str, tuple[str, bytes]]], int | float]] = {
    "max_image_pixels": ({"dataset_max_image_pixels": 1000}, lambda: {"file": ("z", _rgb_zip(64, 2))}, 1000),
    "max_ratio": ({}, lambda: {"file": ("z", black_png_zip(1024, 2))}, 200.0),
    "max_samples": (
        {"dataset_max_samples": 10},
        lambda: {"file": ("n", npz_bytes(x=mnist_arrays(11)[0], y=mnist_arrays(11)[1]))},
        10,
    ),
    "max_decoded_bytes": (
        {"dataset_max_decoded_bytes": 10_000},
        lambda: _idx_pair(*mnist_arrays(4)),
        10_000,
    ),
    "max_archive_entries": ({"dataset_max_archive_entries": 3}, lambda: {"file": ("z", _rgb_zip(4, 4))}, 3),
    "max_unpacked_bytes": ({"dataset_max_unpacked_bytes": 100}, lambda: {"file": ("z", _rgb_zip(4, 2))}, 100),
    "max_classes": (
        {"dataset_max_classes": 100},
        lambda: {"file": ("n", npz_bytes(x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 100])))},
        100,
    ),
}


@pytest.mark.parametrize("cap", list(CAPS))
def test_each_cap_is_a_413_whose_type_names_it(
    client_with: Callable[..., TestClient], tmp_path: Path, cap: str
) -> None:
    settings, files, maximum = CAPS[cap]
    response = upload_dataset(client_with(**settings), files())
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"{PROBLEM}dataset_{cap}_exceeded"
    assert body["errors"][0]["limit"] == f"dataset_{cap}" and body["errors"][0]["maximum"] == maximum
    assert f"dataset_{cap}" in body["detail"]
    assert not [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]  # nothing kept


def test_the_same_upload_passes_under_default_caps(client_with: Callable[..., TestClient]) -> None:
    client = client_with()
    for cap in ("max_image_pixels", "max_samples", "max_decoded_bytes", "max_archive_entries", "max_classes"):
        response = upload_dataset(client, CAPS[cap][1]())
        assert response.status_code == 201, (cap, response.text)


def test_pillow_bomb_guard_is_the_pixel_cap_not_a_decode_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cap raised above Pillow's: Pillow refuses inside open(), over twice its MAX_IMAGE_PIXELS.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "big.zip"
    path.write_bytes(_rgb_zip(64, 2))
    settings_caps = dataset_limits(_settings(dataset_max_image_pixels=10**6))
    with pytest.raises(DatasetLimitError) as info:
        load_dataset(path, limits=settings_caps)
    assert info.value.code == "dataset_max_image_pixels_exceeded"


# -- the job's loader enforces the same caps ---------------------------------------------------------


def _settings(**overrides: Any) -> Any:
    from core.settings import Settings

    return Settings(**overrides)


def test_the_job_loader_refuses_the_bombs_before_decoding(tmp_path: Path) -> None:
    limits = dataset_limits(_settings())
    zip_path = tmp_path / "bomb.zip"
    zip_path.write_bytes(black_png_zip(4096, 2))
    with pytest.raises(DatasetLimitError) as info:
        load_dataset(zip_path, limits=limits)
    assert info.value.code == "dataset_max_image_pixels_exceeded"
    images, labels = tmp_path / "i.gz", tmp_path / "l.gz"
    images.write_bytes(gzip_idx_bomb((300, 64, 64)))
    labels.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (300).to_bytes(4, "big") + bytes(300)))
    with pytest.raises(DatasetLimitError) as info:
        load_mnist_idx(images, labels, limits=limits)
    assert info.value.code == "dataset_max_ratio_exceeded"


def test_the_job_process_loads_an_upload_under_the_deployments_caps(
    client_with: Callable[..., TestClient], make_settings: Any, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from core.db.models import Dataset
    from core.db.session import make_engine, make_session_factory
    from core.storage import Storage
    from workers.child import JobContext
    from workers.execute import load_job_dataset

    x, y = mnist_arrays(20)
    uploaded = upload_dataset(client_with(), {"file": ("d.zip", imagefolder_zip(x, y))})
    assert uploaded.status_code == 201, uploaded.text
    sessions = make_session_factory(make_engine(make_settings().database_url))
    with sessions() as session:
        tenant = session.get(Dataset, uploaded.json()["id"]).tenant_id  # type: ignore[union-attr]
    for caps, loaded in (({}, True), ({"dataset_max_samples": 19}, False)):
        settings = make_settings(**caps)
        storage = Storage(Path(settings.storage_dir))
        ctx = JobContext(
            job_id="job-1",
            worker_id="w",
            settings=settings,
            session_factory=sessions,
            job=SimpleNamespace(tenant_id=tenant),  # type: ignore[arg-type]
        )
        if loaded:
            train, val = load_job_dataset(ctx, storage, uploaded.json()["id"])
            assert len(train) == 20 and val is None
        else:
            with pytest.raises(DatasetLimitError) as info:
                load_job_dataset(ctx, storage, uploaded.json()["id"])
            assert info.value.code == "dataset_max_samples_exceeded"
