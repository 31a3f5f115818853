"""Small builders for the API tests: model files, job bodies, rows in given states."""

from __future__ import annotations

import io
from typing import Any

import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as save_safetensors
from sqlalchemy.orm import Session

from app.auth.tenants import DEFAULT_TENANT, get_or_create_tenant
from core.db.events import record_event
from core.db.models import Artifact, EventType, Job, Model
from core.db.types import new_id, utcnow
from core.storage import Storage, artifact_key
from nncompress.models import get

CONV_HALF = [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}]


def mnist_safetensors() -> bytes:
    return save_safetensors(get("mnist_net").build().state_dict())


def mnist_state_dict_zip() -> bytes:
    buffer = io.BytesIO()
    torch.save(get("mnist_net").build().state_dict(), buffer)
    return buffer.getvalue()


def upload(client: TestClient, data: bytes, *, filename: str = "model.safetensors", **fields: str) -> Any:
    return client.post(
        "/v1/models", files={"file": (filename, data, "application/octet-stream")}, data=fields
    )


def uploaded_mnist(client: TestClient) -> str:
    response = upload(client, mnist_safetensors(), architecture="mnist_net")
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def uploaded_trained_mnist(client: TestClient) -> str:
    """Uploads the packaged *trained* mnist_net weights (for jobs whose accuracy must mean something).

    Returns:
        The new model's id.
    """
    from nncompress.data import mnist_net_weights_path

    data = mnist_net_weights_path().read_bytes()
    response = upload(client, data, filename="mnist_net.safetensors", architecture="mnist_net")
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def job_body(model_id: str, **overrides: Any) -> dict[str, Any]:
    return {"model_id": model_id, "pruner": "l1norm", "config_list": CONV_HALF, **overrides}


def finished_job(
    session: Session,
    storage: Storage,
    model_id: str,
    files: dict[str, tuple[bytes, str]],
    status: str = "succeeded",
) -> Job:
    """A job as a worker leaves it: finished, with artifact files on disk and rows recorded."""
    import hashlib

    now = utcnow()
    model = session.get(Model, model_id)
    assert model is not None
    job = Job(
        id=new_id(),
        tenant_id=model.tenant_id,
        model_id=model_id,
        spec={"config_list": CONV_HALF},
        status=status,
        progress=100.0,
    )
    job.started_at = job.finished_at = now
    session.add(job)
    session.flush()
    for name, (data, media_type) in files.items():
        key = artifact_key(job.id, name)
        path = storage.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        session.add(
            Artifact(
                job_id=job.id,
                name=name,
                sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                media_type=media_type,
                storage_key=key,
            )
        )
    record_event(session, job, EventType(status) if status != "running" else EventType.CLAIMED)
    session.commit()
    return job


def model_row(session: Session, tenant: str = DEFAULT_TENANT) -> Model:
    model = Model(
        tenant_id=get_or_create_tenant(session, tenant)[0].id,
        sha256="0" * 64,
        size_bytes=1,
        format="safetensors",
        architecture="mnist_net",
        filename="m",
        storage_key="k",
    )
    session.add(model)
    session.commit()
    return model
