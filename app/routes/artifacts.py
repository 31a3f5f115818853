"""/v1/jobs/{job_id}/artifacts/{name}: download a finished job's files (streamed, Range requests)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Response
from fastapi.responses import FileResponse

from app.deps import CurrentJob, StorageDep
from app.services.artifacts import check_range, find_artifact

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={206: {"description": "Partial content"}, 304: {"description": "Not modified"}},
)
def download_artifact(
    job: CurrentJob,
    storage: StorageDep,
    name: Annotated[str, Path(max_length=255)],
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Stream an artifact; ETag is its sha256, single and multiple byte ranges are honoured."""
    artifact, path = find_artifact(job=job, name=name, storage=storage)
    etag = f'"{artifact.sha256}"'
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    check_range(range_header, artifact.size_bytes)
    return FileResponse(
        path,
        media_type=artifact.media_type,
        filename=artifact.name,
        headers={"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"},
    )
