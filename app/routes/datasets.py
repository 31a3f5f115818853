"""/v1/datasets: upload a labelled data set (validated on arrival), read it back, list them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep, load_or_404
from app.openapi import UPLOAD_PROBLEMS, engine_errors, file_part, problems, upload_body
from app.schemas.datasets import DatasetOut, DatasetPage, dataset_out
from app.services.datasets import (
    EXTRA_FILE_FIELDS,
    FILE_FIELD,
    create_dataset,
    list_datasets,
    parse_normalize,
)
from app.services.multipart import receive_form
from app.services.pagination import CURSOR_PATTERN
from app.upload_slots import UPLOAD_SLOT
from core.dataset_limits import dataset_limits
from core.db.models import Dataset
from core.errors import FormatMismatch, InvalidCursor, InvalidUpload, NotFound, UploadTooLarge
from nncompress.datasets import FORMATS, DatasetError

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
DATASET_UPLOAD_PROBLEMS = problems(
    UPLOAD_PROBLEMS,
    UploadTooLarge,
    (413, "dataset_*"),  # a cap of the decoder (pixels, entries, ratio): dataset_<cap>_exceeded
    InvalidUpload,
    FormatMismatch,
    engine_errors(DatasetError),
)

UPLOAD_BODY = upload_body(
    {
        "file": file_part(".npz with x/y, an ImageFolder zip, or the idx images file"),
        "labels": file_part("idx labels file"),
        "val_file": file_part("a validation part in the same format (then jobs do not split)"),
        "val_labels": file_part(),
        "format": {"type": "string", "enum": list(FORMATS), "description": "checked, not trusted"},
        "normalize": {
            "type": "string",
            "description": 'JSON {"mean": m, "std": s} applied after uint8 → [0, 1]',
            "example": '{"mean": 0.1307, "std": 0.3081}',
        },
    }
)


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    openapi_extra=UPLOAD_BODY,
    dependencies=[UPLOAD_SLOT],
    responses=DATASET_UPLOAD_PROBLEMS,
)
async def upload_dataset(
    request: Request,
    response: Response,
    session: SessionDep,
    storage: StorageDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
) -> DatasetOut:
    """Upload a labelled data set; streamed to storage with its sha256, validated, 422 when malformed."""
    form = await receive_form(
        request,
        storage=storage,
        file_field=FILE_FIELD,
        limit=principal.max_upload_bytes,
        extra_file_fields=EXTRA_FILE_FIELDS,
    )
    try:
        normalize = parse_normalize(form.fields.get("normalize"))
    except BaseException:
        form.discard()
        raise
    dataset = await run_in_threadpool(
        create_dataset,
        session=session,
        tenant_id=principal.tenant_id,
        storage=storage,
        form=form,
        declared_format=form.fields.get("format") or None,
        normalize=normalize,
        limits=dataset_limits(settings),
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return dataset_out(dataset)


@router.get("", response_model=DatasetPage, responses=problems(InvalidCursor))
def get_datasets(
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="opaque: a next_cursor")] = None,
) -> DatasetPage:
    """The tenant's data sets, newest first; cursor-paginated."""
    rows, next_cursor = list_datasets(
        session=session, tenant_id=principal.tenant_id, limit=limit, cursor=cursor
    )
    return DatasetPage(items=[dataset_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=problems(NotFound))
def get_dataset(
    session: SessionDep, principal: CurrentPrincipal, dataset_id: Annotated[str, Path(max_length=64)]
) -> DatasetOut:
    """A data set's hash, size, format, samples, classes, shapes and summary."""
    row: Dataset = load_or_404(session, Dataset, dataset_id, "data set", principal.tenant_id)
    return dataset_out(row)
