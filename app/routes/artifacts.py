"""/v1/jobs/{job_id}/artifacts/{name}: download a finished job's files (streamed, Range requests)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Response
from fastapi.responses import FileResponse, RedirectResponse

from app.deps import CurrentJob, SettingsDep, StorageDep
from app.openapi import problems
from app.services.artifacts import artifact_file, check_range, find_artifact
from core.errors import (
    InvalidRange,
    JobNotFinished,
    JobNotSucceeded,
    NotFound,
    RangeNotSatisfiable,
    StorageUnavailable,
)

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])
# What the pipeline writes: weights (safetensors, TorchScript), ONNX models, JSON reports and manifests.
_BINARY = {"schema": {"type": "string", "format": "binary"}}
ARTIFACT_CONTENT = {"application/octet-stream": _BINARY, "application/onnx": _BINARY, "application/json": {}}
PARTIAL_CONTENT = {**ARTIFACT_CONTENT, "multipart/byteranges": _BINARY}  # several ranges at once


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={
        200: {"description": "The file", "content": ARTIFACT_CONTENT},
        206: {"description": "Partial content", "content": PARTIAL_CONTENT},
        304: {"description": "Not modified"},
        307: {"description": "A short-lived presigned URL of the object store (download_redirect_seconds)"},
        **problems(
            NotFound, InvalidRange, JobNotFinished, JobNotSucceeded, RangeNotSatisfiable, StorageUnavailable
        ),
    },
)
def download_artifact(
    job: CurrentJob,
    storage: StorageDep,
    settings: SettingsDep,
    name: Annotated[str, Path(max_length=255)],
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Stream an artifact (or 307 to the object store); ETag is its sha256, byte ranges are honoured."""
    artifact = find_artifact(job=job, name=name)
    etag = f'"{artifact.sha256}"'
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    if settings.download_redirect_seconds:
        url = storage.presigned_url(
            artifact.storage_key,
            expires_seconds=settings.download_redirect_seconds,
            filename=artifact.name,
            media_type=artifact.media_type,
        )
        if url is not None:  # the store answers Range itself; the URL expires, so it is not cached
            return RedirectResponse(url, status_code=307, headers={"ETag": etag, "Cache-Control": "no-store"})
    check_range(range_header, artifact.size_bytes)
    path = artifact_file(job=job, artifact=artifact, storage=storage)
    return FileResponse(
        path,
        media_type=artifact.media_type,
        filename=artifact.name,
        headers={"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"},
    )
