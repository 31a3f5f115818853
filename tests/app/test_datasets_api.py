"""POST/GET /v1/datasets, and data sets in POST /v1/jobs: each format, malformed data → 422 with the
loader's message, the size limit, and the job-time checks (channels, classes, quant config)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.app.dataset_files import (
    MNIST_NORMALIZE,
    idx_bytes,
    imagefolder_zip,
    mnist_arrays,
    npz_bytes,
    upload_dataset,
    uploaded_mnist_npz,
)
from tests.app.factories import uploaded_mnist

PROBLEM = "application/problem+json"


@pytest.fixture
def client(make_client: Callable[..., Any], make_settings: Any, db_url: str) -> TestClient:
    return make_client(make_settings(database_url=db_url))


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _problem(response: Any, status: int = 422, code: str = "invalid_dataset") -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:nncompress:problem:{code}", body
    return body


# --- upload, each format --------------------------------------------------------------------------


def test_npz_upload_records_hash_shapes_classes_and_reads_back(client: TestClient, tmp_path: Path) -> None:
    x, y = mnist_arrays(300)
    data = npz_bytes(x=x, y=y)
    response = upload_dataset(client, {"file": ("train.npz", data)}, normalize=MNIST_NORMALIZE)
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/datasets/{body['id']}"
    assert (body["format"], body["samples"], body["num_classes"], body["sample_shape"]) == (
        "npz",
        300,
        10,
        [1, 28, 28],
    )
    assert body["size_bytes"] == len(data) and body["val_samples"] is None
    assert body["files"]["file"] == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "filename": "train.npz",
    }
    assert body["summary"]["class_counts"] == np.bincount(y, minlength=10).tolist()
    assert body["normalize"] == MNIST_NORMALIZE
    stored = tmp_path / "storage" / "datasets" / body["id"] / "file.bin"
    assert stored.read_bytes() == data
    assert client.get(f"/v1/datasets/{body['id']}").json() == body
    page = client.get("/v1/datasets").json()
    assert [d["id"] for d in page["items"]] == [body["id"]] and page["next_cursor"] is None


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_mnist_idx_pair_gzip_or_raw(client: TestClient, gz: bool) -> None:
    x, y = mnist_arrays(120)
    response = upload_dataset(
        client,
        {
            "file": ("train-images-idx3-ubyte", idx_bytes(x, gz=gz)),
            "labels": ("train-labels-idx1-ubyte", idx_bytes(y.astype(np.uint8), gz=gz)),
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["format"], body["samples"], body["sample_shape"]) == ("mnist_idx", 120, [1, 28, 28])
    assert set(body["files"]) == {"file", "labels"}


def _two_per_class(start: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = mnist_arrays(200, start=start)
    keep = np.concatenate([np.flatnonzero(y == d)[:2] for d in range(10)])
    return x[keep], y[keep]


def test_imagefolder_zip_with_a_validation_part(client: TestClient) -> None:
    x, y = _two_per_class(0)
    vx, vy = _two_per_class(200)
    response = upload_dataset(
        client,
        {"file": ("train.zip", imagefolder_zip(x, y)), "val_file": ("val.zip", imagefolder_zip(vx, vy))},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["format"], body["samples"], body["val_samples"]) == ("imagefolder_zip", 20, 20)
    assert body["summary"]["class_names"] == [f"digit_{d}" for d in range(10)]
    assert body["summary"]["val"]["samples"] == 20
    # A validation zip whose class folders differ would map indices to other classes: refused.
    body = _problem(
        upload_dataset(
            client,
            {
                "file": ("t.zip", imagefolder_zip(x, y)),
                "val_file": ("v.zip", imagefolder_zip(vx[2:], vy[2:])),
            },
        )
    )
    assert "classes" in body["detail"] and "digit_0" in body["detail"]


# --- malformed uploads ----------------------------------------------------------------------------


def _ragged() -> bytes:
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((28, 28)), np.zeros((27, 28))
    return npz_bytes(x=ragged, y=np.array([0, 1]))


def _nan() -> bytes:
    x = np.zeros((10, 1, 8, 8), np.float32)
    x[3, 0, 2, 5] = np.nan
    return npz_bytes(x=x, y=np.arange(10))


MALFORMED = {
    "ragged": ({"file": ("r.npz", _ragged())}, "object array"),
    "negative label": (
        {"file": ("l.npz", npz_bytes(x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, -3, 2])))},
        "y[2] = -3 is out of range",
    ),
    "nan": ({"file": ("n.npz", _nan())}, "x[3, 0, 2, 5] is nan"),
    "lengths differ": (
        {"file": ("d.npz", npz_bytes(x=np.zeros((5, 8, 8), np.uint8), y=np.arange(4)))},
        "x has 5 samples but y has 4 labels",
    ),
    "no x/y": ({"file": ("e.npz", npz_bytes(images_=np.zeros(3)))}, "the npz must hold arrays 'x' and 'y'"),
    "truncated idx": (
        {
            "file": ("i", idx_bytes(np.zeros((3, 4, 4), np.uint8), gz=False)[:-5]),
            "labels": ("l", idx_bytes(np.zeros(3, np.uint8), gz=False)),
        },
        "header declares [3, 4, 4]",
    ),
    "zip traversal": (
        {"file": ("t.zip", imagefolder_zip(*mnist_arrays(4), extra={"../evil/x.png": b"x"}))},
        "'../evil/x.png'",
    ),
    "broken image": (
        {"file": ("b.zip", imagefolder_zip(*mnist_arrays(4), extra={"digit_1/bad.png": b"not a png"}))},
        "does not decode as an image",
    ),
    "unknown format": ({"file": ("x.csv", b"1,2,3\n")}, "is not a supported data set"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_data_is_422_with_the_loaders_message_and_leaves_nothing(
    client: TestClient, tmp_path: Path, case: str
) -> None:
    files, message = MALFORMED[case]
    body = _problem(upload_dataset(client, files))
    assert message in body["detail"], body["detail"]
    assert body["errors"][0]["code"] == "invalid_dataset"
    assert ".part" not in body["detail"]  # the temp file's name never shows
    assert files_under(tmp_path / "storage") == []


def test_declared_format_must_match_and_normalize_must_parse(client: TestClient) -> None:
    x, y = mnist_arrays(10)
    files = {"file": ("a.npz", npz_bytes(x=x, y=y))}
    _problem(upload_dataset(client, files, format="imagefolder_zip"), code="format_mismatch")
    _problem(upload_dataset(client, files, format="csv"), code="invalid_upload")
    _problem(upload_dataset(client, files, normalize={"mean": 0.1, "std": 0}), code="invalid_upload")


def test_oversize_upload_is_413_over_all_parts_and_leaves_no_file(
    make_client: Callable[..., Any], make_settings: Any, tmp_path: Path
) -> None:
    x, y = mnist_arrays(200)
    images, labels = idx_bytes(x, gz=False), idx_bytes(y.astype(np.uint8), gz=False)
    # Each part fits alone; together they do not.
    client = make_client(make_settings(max_upload_bytes=len(images) + 100))
    body = _problem(
        upload_dataset(client, {"file": ("i", images), "labels": ("l", labels + b"\0" * 200)}),
        status=413,
        code="upload_too_large",
    )
    assert body["errors"][0]["limit_bytes"] == len(images) + 100
    assert files_under(tmp_path / "storage") == []


def test_unknown_dataset_is_404(client: TestClient) -> None:
    _problem(client.get("/v1/datasets/nope"), status=404, code="not_found")


# --- data sets in job specs -----------------------------------------------------------------------


def _job(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/jobs", json={"model_id": uploaded_mnist(client), **body})


def test_job_with_dataset_finetune_schedule_and_quantize_is_queued_with_its_spec(client: TestClient) -> None:
    dataset = uploaded_mnist_npz(client, n=100)
    response = _job(
        client,
        config_list=[{"sparsity_per_layer": 0.5, "op_types": ["Conv2d"]}],
        dataset_id=dataset["id"],
        val_fraction=0.2,
        finetune={"epochs": 2, "lr": 0.01, "distillation": {"weight": 0.5, "temperature": 4}},
        schedule={"kind": "agp", "steps": 2, "accuracy_budget": 1.0},
        quantize={"mode": "static", "calibration_batches": 2},
    )
    assert response.status_code == 202, response.text
    spec = response.json()["spec"]
    assert spec["dataset_id"] == dataset["id"] and spec["val_fraction"] == 0.2
    assert spec["finetune"]["distillation"] == {"weight": 0.5, "temperature": 4.0}
    assert spec["finetune"]["device"] == "cpu"  # the job's device
    assert spec["schedule"] == {"kind": "agp", "steps": 2, "accuracy_budget": 1.0}
    assert spec["quantize"]["mode"] == "static" and spec["quantize"]["calibration_batches"] == 2


def test_quantize_only_job_needs_no_config_list(client: TestClient) -> None:
    response = _job(
        client, pruner=None, quantize={"mode": "dynamic", "config_list": [{"op_types": ["Linear"]}]}
    )
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["pruner"] is None and response.json()["spec"]["config_list"] == []
    response = _job(client, quantize={"mode": "dynamic"})  # no config_list: no pruning either
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("body", "code", "key", "message"),
    [
        ({"quantize": {"mode": "int4"}}, "invalid_quant_config", "quantize.mode", "must be one of static"),
        (
            {"quantize": {"mode": "dynamic", "config_list": [{"op_names": ["fc9"]}]}},
            "unknown_layer",
            None,
            "fc9",
        ),
        (
            {
                "quantize": {
                    "mode": "dynamic",
                    "config_list": [{"op_types": ["Linear"], "quant_scheme": "odd"}],
                }
            },
            "invalid_quant_config",
            "quantize.config_list[0].quant_scheme",
            "quant_scheme",
        ),
        ({"finetune": {"epochs": 0}}, "invalid_config", "finetune.epochs", "finetune.epochs must be"),
        ({"finetune": {"optimizer": "lion"}}, "invalid_config", "finetune.optimizer", "finetune.optimizer"),
        ({"schedule": {"kind": "cubic"}, "finetune": {}}, "invalid_config", "schedule.kind", "schedule.kind"),
        ({"pruner": "fpgm"}, "invalid_job_spec", None, "needs a config_list"),
        ({"pruner": None}, "invalid_config", "pruner", "would do nothing"),
        (
            {"pruner": None, "config_list": [{"sparsity": 0.5}], "quantize": {"mode": "dynamic"}},
            "invalid_config",
            "config_list",
            "needs a pruner",
        ),
    ],
)
def test_bad_training_and_quantize_keys_are_422_naming_the_key(
    client: TestClient, body: dict[str, Any], code: str, key: str | None, message: str
) -> None:
    problem = _problem(_job(client, **body), code=code)
    assert message in problem["detail"], problem["detail"]
    if key is not None:
        assert problem["errors"][0]["key"] == key


def test_training_without_a_dataset_is_422_naming_dataset_id(client: TestClient) -> None:
    problem = _problem(
        _job(client, config_list=[{"sparsity": 0.5, "op_types": ["Conv2d"]}], finetune={"epochs": 1}),
        code="invalid_job_spec",
    )
    assert (
        problem["errors"][0]["field"] == "dataset_id"
        and "finetune needs a labelled data set" in problem["detail"]
    )
    _problem(_job(client, dataset_id="nope", quantize={"mode": "static"}), status=404, code="not_found")


def test_dataset_that_does_not_fit_the_model_is_422_at_submission(client: TestClient) -> None:
    rgb = upload_dataset(
        client, {"file": ("rgb.npz", npz_bytes(x=np.zeros((8, 28, 28, 3), np.uint8), y=np.arange(8)))}
    )
    assert rgb.status_code == 201, rgb.text
    assert rgb.json()["sample_shape"] == [3, 28, 28]  # channels-last was read as such
    problem = _problem(_job(client, dataset_id=rgb.json()["id"], quantize={"mode": "static"}))
    assert "samples have 3 channel(s) but the model expects 1" in problem["detail"]
    assert problem["errors"][0]["field"] == "dataset_id"
    many = upload_dataset(
        client, {"file": ("c.npz", npz_bytes(x=np.zeros((12, 28, 28), np.uint8), y=np.arange(12)))}
    )
    problem = _problem(_job(client, dataset_id=many.json()["id"], quantize={"mode": "static"}))
    assert "the data set has 12 classes but the model outputs 10" in problem["detail"]
