"""/v1/models: upload a model file, read it back, preflight a config against it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.deps import CurrentModel, CurrentPrincipal, SessionDep, SettingsDep, StorageDep
from app.openapi import UPLOAD_PROBLEMS, engine_errors, file_part, problems, upload_body
from app.schemas.models import ModelOut, PreflightIn
from app.services.bounds import JobLimits
from app.services.model_intake import FORMATS
from app.services.models import create_model
from app.services.multipart import receive_form
from app.services.preflight import run_preflight
from app.upload_slots import UPLOAD_SLOT
from core.db.models import Model
from core.errors import (
    FormatMismatch,
    InvalidInputShape,
    InvalidJobSpec,
    InvalidUpload,
    NotFound,
    OnnxExternalData,
    PickleDisabled,
    PreflightUnavailable,
    UnknownArchitecture,
    UnsupportedModelFormat,
    UnsupportedOnnxOps,
    UploadTooLarge,
    WeightsMismatch,
)
from nncompress.errors import ConfigError, ModelLoadError, UnsupportedModelError
from nncompress.inspection import ExampleInputError

router = APIRouter(prefix="/v1/models", tags=["models"])
MODEL_UPLOAD_PROBLEMS = problems(
    UPLOAD_PROBLEMS,
    UploadTooLarge,
    InvalidUpload,
    PickleDisabled,
    UnknownArchitecture,
    FormatMismatch,
    WeightsMismatch,
    UnsupportedModelFormat,
    UnsupportedOnnxOps,
    OnnxExternalData,
    engine_errors(ModelLoadError),
)
PREFLIGHT_PROBLEMS = problems(
    NotFound,
    PreflightUnavailable,
    InvalidUpload,
    InvalidJobSpec,
    InvalidInputShape,
    engine_errors(ConfigError),
    engine_errors(ModelLoadError),
    engine_errors(UnsupportedModelError),
    engine_errors(ExampleInputError),
)

UPLOAD_BODY = upload_body(
    {
        "file": file_part(
            "safetensors or torch.save weights (with 'architecture'), ONNX, a zip of a Hugging Face "
            "save_pretrained folder or of an ONNX model with its external data, or (where the deployment "
            "allows it) a pickled module"
        ),
        "config": file_part("config.json of a Hugging Face model whose weights are 'file'"),
        "architecture": {
            "type": "string",
            "description": "for weights: a registry name (mnist_net), torchvision/<model> or timm/<model>",
        },
        "format": {"type": "string", "enum": list(FORMATS), "description": "checked, not trusted"},
    }
)


@router.post(
    "",
    status_code=201,
    response_model=ModelOut,
    openapi_extra=UPLOAD_BODY,
    dependencies=[UPLOAD_SLOT],
    responses=MODEL_UPLOAD_PROBLEMS,
)
async def upload_model(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    principal: CurrentPrincipal,
) -> Model:
    """Upload a model (weights + architecture name, ONNX, a model folder zip); streamed with its sha256."""
    form = await receive_form(
        request,
        storage=storage,
        file_field="file",
        limit=principal.max_upload_bytes,
        extra_file_fields=("config",),
    )
    assert form.file is not None  # receive_form raises when the file part is missing
    declared = form.fields.get("format") or None
    if declared is not None and declared not in FORMATS:
        form.discard()
        raise InvalidUpload(
            f"format {declared!r} is not one of {', '.join(FORMATS)}", errors=[{"field": "format"}]
        )
    model = await run_in_threadpool(
        create_model,
        session=session,
        tenant_id=principal.tenant_id,
        storage=storage,
        upload=form.file,
        filename=form.filename,
        config=form.files.get("config"),
        architecture=form.fields.get("architecture") or None,
        declared_format=declared,
        allow_pickle=settings.allow_pickle,
    )
    response.headers["Location"] = f"/v1/models/{model.id}"
    return model


@router.get("/{model_id}", response_model=ModelOut, responses=problems(NotFound))
def get_model(model: CurrentModel) -> Model:
    """An uploaded model's id, hash, size, format, architecture and what intake read from it."""
    return model


@router.post("/{model_id}/preflight", responses=PREFLIGHT_PROBLEMS)
def preflight_model(
    model: CurrentModel, body: PreflightIn, storage: StorageDep, settings: SettingsDep
) -> dict[str, Any]:
    """Resolve a config_list against the model: layers, channels kept, coupled groups, unsupported ops."""
    return run_preflight(
        model=model,
        storage=storage,
        body=body,
        max_params=settings.preflight_max_params,
        limits=JobLimits.from_settings(settings),
    )
