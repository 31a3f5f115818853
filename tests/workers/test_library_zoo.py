"""The models users really have, through the HTTP API, to a verified, smaller model and a running ONNX file.

Each case of ``tests/library_zoo.py`` is built by its library (random weights, nothing downloaded), exported
the way the library's documentation says (ONNX from either exporter, a transformers/timm directory, a
state_dict or safetensors for an architecture named ``torchvision/…``, a pickled module on a deployment that
allows pickles), uploaded, and compressed with a config_list written against the *PyTorch* layer names.
The service runs embedded (SQLite, local files, the real job process), as ``nncompress serve`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from core.settings import Settings
from tests.library_zoo import ONNX, ONNX_DYNAMO, ZOO, ZooCase, export_upload
from tests.workers.conftest import FAST

pytestmark = pytest.mark.slow

# A deadline only so a hung job fails the test instead of CI; the jobs take seconds to a minute.
JOB_DEADLINE_S = 1200


@pytest.fixture(scope="module")
def zoo_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("zoo-service")
    settings = Settings(
        database_url=f"sqlite:///{root / 'db.sqlite'}",
        storage_dir=root / "storage",
        allow_pickle=True,  # the pickle route; refusing pickles is tested in tests/app
        **{**FAST, "job_time_limit_seconds": JOB_DEADLINE_S},
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _upload(client: TestClient, upload: dict[str, Any]) -> dict[str, Any]:
    path: Path = upload["file"]
    with path.open("rb") as fh:
        response = client.post(
            "/v1/models", files={"file": (path.name, fh, "application/octet-stream")}, data=upload["data"]
        )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _wait(client: TestClient, location: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_DEADLINE_S
    while True:
        job = client.get(location).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        assert time.monotonic() < deadline, f"job still {job['status']} ({job.get('stage')})"
        time.sleep(0.3)


def _named_layers(config_list: list[dict[str, Any]]) -> list[str]:
    return [n for entry in config_list if not entry.get("exclude") for n in entry.get("op_names", [])]


def _check_onnx(client: TestClient, job: dict[str, Any], case: ZooCase, tmp_path: Path) -> None:
    import onnxruntime as ort

    artifact = next(a for a in job["artifacts"] if a["name"] == "model.onnx")
    data = client.get(artifact["url"]).content
    assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = case.example_input(batch=2)
    feed = {session.get_inputs()[0].name: x.numpy()}
    outputs = session.run(None, feed)
    assert outputs[0].shape[0] == 2 and np.isfinite(outputs[0]).all()


@pytest.mark.parametrize("case", ZOO, ids=[c.name for c in ZOO])
def test_library_model_compresses_through_the_api(
    zoo_client: TestClient, case: ZooCase, tmp_path: Path
) -> None:
    model = case.build()
    upload = export_upload(case, model, tmp_path / "upload")
    stored = _upload(zoo_client, upload)
    body = {
        "model_id": stored["id"],
        "pruner": "l1norm",
        "config_list": case.config_list,
        "input_shape": list(case.input_shape),
        "options": {"latency_runs": 2, "latency_batch_sizes": [1, 2]},
    }
    response = zoo_client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = _wait(zoo_client, response.headers["Location"])
    assert job["status"] == "succeeded", job["error"]

    before, after = job["metrics"]["before"], job["metrics"]["after"]
    params = sum(p.numel() for p in model.parameters())
    if case.route in (ONNX, ONNX_DYNAMO):
        # The exporters fold BatchNorm into the convolutions (and drop what the output does not use,
        # e.g. BERT's pooler), so the imported model has a little fewer parameters than the module.
        assert 0.95 * params <= before["params"] <= params
    else:
        assert before["params"] == params
    assert after["params"] < before["params"], "the compressed model is no smaller"
    report = job["result"]
    assert report["speedup_applied"], report["notes"]
    equivalence = report["checks"]["equivalence"]  # the job fails when it does not hold; check the figure
    allowed = equivalence["rtol"] * equivalence["output_scale"] + equivalence["atol"]
    assert equivalence["max_abs_diff"] <= allowed, equivalence
    # The layers the user named by their PyTorch paths are the ones that shrank.
    layers = {layer["name"]: layer for layer in report["layers"]}
    for name in _named_layers(case.config_list):
        assert name in layers, f"{name} not among {sorted(layers)[:20]}"
        assert layers[name]["out_after"] < layers[name]["out_before"], layers[name]
    _check_onnx(zoo_client, job, case, tmp_path)
    _record(case, job)


def _record(case: ZooCase, job: dict[str, Any]) -> None:
    """Appends the case's figures to ``$NNCOMPRESS_ZOO_REPORT`` (a JSON-lines file) when it is set."""
    target = os.environ.get("NNCOMPRESS_ZOO_REPORT")
    if not target:
        return
    timings = job["result"].get("timings", {})
    row = {
        "model": case.name,
        "family": case.family,
        "route": case.route,
        "status": job["status"],
        "params_before": job["metrics"]["before"]["params"],
        "params_after": job["metrics"]["after"]["params"],
        "job_seconds": round(sum(float(v) for v in timings.values()), 2),
        "timings": timings,
    }
    with open(target, "a") as fh:
        fh.write(json.dumps(row) + "\n")
