"""Legacy (non-zip) ``torch.save(state_dict)`` files: classified as ``state_dict`` by scanning their
pickle opcodes (nothing unpickled in the API), and run to a finished job; a legacy pickle that names
any other global stays ``pickle``."""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from app.services.pickle_scan import legacy_torch_kind
from tests.workers.test_intake_formats import CONV_HALF, make_client, mnist, run_job, saved, upload


def legacy(obj: object, **kwargs: object) -> bytes:
    return saved(obj, _use_new_zipfile_serialization=False, **kwargs)


class Payload:
    """Unpickling it would run code: the scan must call it a pickle without unpickling it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


@pytest.mark.parametrize(
    ("obj", "protocol", "kind"),
    [
        (nn.Linear(3, 2).state_dict(), 2, "state_dict"),
        ({"state_dict": nn.Linear(3, 2).state_dict(), "epoch": 3}, 4, "state_dict"),
        ({"w": nn.Parameter(torch.ones(2)), "b": torch.zeros(2, dtype=torch.bfloat16)}, 2, "state_dict"),
        (nn.Linear(3, 2), 2, "pickle"),
        ({"w": torch.ones(2), "evil": Payload()}, 2, "pickle"),
        ({"w": torch.ones(2), "evil": Payload()}, 4, "pickle"),
    ],
)
def test_legacy_stream_scan(tmp_path: Path, obj: object, protocol: int, kind: str) -> None:
    path = tmp_path / "f.pt"
    path.write_bytes(legacy(obj, pickle_protocol=protocol))
    assert legacy_torch_kind(path) == kind


def test_plain_and_broken_pickles_are_not_state_dicts(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    assert legacy_torch_kind(plain) == "pickle"  # no torch magic number
    cut = tmp_path / "cut.pt"
    cut.write_bytes(legacy(nn.Linear(3, 2).state_dict())[:40])
    assert legacy_torch_kind(cut) == "pickle"


@pytest.fixture
def client(tmp_path: Path, sqlite_url: str) -> Iterator[TestClient]:
    with make_client(tmp_path, sqlite_url) as client:
        yield client


def test_legacy_state_dict_upload_is_a_state_dict(client: TestClient) -> None:
    model = upload(client, legacy(mnist().state_dict()), "mnist.pt", architecture="mnist_net")
    assert model["format"] == "state_dict"
    assert model["summary"]["parameters"] == sum(p.numel() for p in mnist().state_dict().values())


def test_legacy_state_dict_with_wrong_shapes_is_refused_naming_them(client: TestClient) -> None:
    state = mnist().state_dict()
    state["fc2.weight"] = torch.zeros(3, 3)
    response = client.post(
        "/v1/models",
        files={"file": ("m.pt", io.BytesIO(legacy(state)), "application/octet-stream")},
        data={"architecture": "mnist_net"},
    )
    assert response.status_code == 422, response.text
    assert "fc2.weight" in response.json()["detail"]


def test_legacy_pickle_with_another_global_is_still_a_pickle(client: TestClient) -> None:
    response = client.post(
        "/v1/models",
        files={"file": ("m.pt", io.BytesIO(legacy({"w": torch.ones(2), "x": Payload()})), "x")},
        data={"architecture": "mnist_net"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "urn:nncompress:problem:pickle_disabled"


@pytest.mark.slow  # a real job process
def test_legacy_state_dict_job_succeeds(client: TestClient) -> None:
    model = upload(client, legacy(mnist().state_dict()), "mnist.pt", architecture="mnist_net")
    job = run_job(client, {"model_id": model["id"], "config_list": CONV_HALF})
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["after"]["params"] < job["metrics"]["before"]["params"]
    assert job["result"]["checks"]["reload"]["max_abs_diff"] == 0.0
