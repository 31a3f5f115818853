"""Labelled data set files for the API and worker tests, built from the shipped MNIST subset.

Every format the service accepts (npz, MNIST idx raw and gzip, ImageFolder zip) and the malformed
variants a user gets a 422 for, as bytes ready to upload.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

MNIST_NORMALIZE = {"mean": 0.1307, "std": 0.3081}


def mnist_arrays(n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` raw MNIST images (uint8, 28x28) and their labels from the shipped subset."""
    from nncompress.data import mnist_net_weights_path

    with np.load(mnist_net_weights_path().parent / "mnist_subset.npz") as npz:
        return npz["images"][start : start + n].copy(), npz["labels"][start : start + n].astype(np.int64)


def npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def idx_bytes(array: np.ndarray, *, gz: bool) -> bytes:
    """An idx file (the MNIST distribution format) holding a uint8 array."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return gzip.compress(data) if gz else data


def imagefolder_zip(x: np.ndarray, y: np.ndarray, *, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip of ``<class>/<n>.png`` grayscale images."""
    from PIL import Image

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            png = io.BytesIO()
            Image.fromarray(image, mode="L").save(png, format="PNG")
            zf.writestr(f"digit_{label}/{i}.png", png.getvalue())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buffer.getvalue()


def upload_dataset(
    client: TestClient,
    files: dict[str, tuple[str, bytes]],
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> Any:
    """POST /v1/datasets with the given file parts (``file``, ``labels``, ``val_file``...) and fields."""
    data = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in fields.items()}
    parts = {role: (name, content, "application/octet-stream") for role, (name, content) in files.items()}
    return client.post("/v1/datasets", files=parts, data=data, headers=headers or {})


def uploaded_mnist_npz(client: TestClient, n: int = 400, **fields: Any) -> dict[str, Any]:
    """Uploads ``n`` MNIST samples as npz (uint8, normalised as the seed Net was trained); the body."""
    x, y = mnist_arrays(n)
    response = upload_dataset(
        client, {"file": ("mnist.npz", npz_bytes(x=x, y=y))}, normalize=MNIST_NORMALIZE, **fields
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]
