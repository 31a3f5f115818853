"""Model intake: classify an uploaded file by its bytes, check it, and record it.

Nothing here unpickles or executes the upload (design §4): safetensors headers are read as JSON,
``torch.save`` archives are classified by scanning pickle opcodes, ONNX is parsed as protobuf.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from sqlalchemy.orm import Session

from app.services.json_bounds import check_json_file
from app.services.model_intake import check_architecture, classify, describe
from core.db.models import Model
from core.db.types import new_id
from core.errors import FormatMismatch, InvalidUpload, PickleDisabled
from core.storage import Storage, TempWrite, config_key, model_key

_UNSAFE_CHARS = re.compile(r"[^\w.\- ]+")


def display_filename(raw: str) -> str:
    """The last path component of ``raw``, without control or path characters (display only)."""
    name = unicodedata.normalize("NFKC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_CHARS.sub("_", name).strip(" .")
    return name[:255] or "upload"


def commit_stored(session: Session, row: object, *, storage: Storage, keys: Sequence[str]) -> None:
    """Commits a new row whose files are already in storage; if the commit fails, deletes them.

    The files are stored first so a committed row never points at nothing; deleting them on
    failure keeps a failed upload from leaving files no row refers to.

    Args:
        session: the request's session.
        row: the new Model or Dataset.
        storage: where its files were committed.
        keys: the storage keys of those files, deleted in this order on failure.
    """
    try:
        session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        for key in keys:
            storage.delete(key)
        raise


def create_model(
    *,
    session: Session,
    tenant_id: str,
    storage: Storage,
    upload: TempWrite,
    filename: str,
    config: TempWrite | None = None,
    architecture: str | None,
    declared_format: str | None,
    allow_pickle: bool,
) -> Model:
    """Checks an uploaded temp file; if acceptable, moves it to ``models/<id>/upload.bin`` and records it.

    ``config`` is the config.json part of a Hugging Face folder sent as parts (``file`` = its
    safetensors weights); it is stored next to the upload as ``models/<id>/config.json``. The temp
    files are deleted on every refusal, and the stored files if the insert fails.

    Raises:
        InvalidUpload, FormatMismatch, PickleDisabled, UnknownArchitecture, WeightsMismatch,
        UnsupportedModelFormat, UnsupportedOnnxOps, OnnxExternalData.
    """
    temps = [upload] if config is None else [upload, config]
    try:
        if config is not None:
            check_json_file(config.path, what="config.json")
        fmt = classify(upload.path)
        if config is not None:
            if fmt != "safetensors":
                raise InvalidUpload(
                    f"a 'config' part goes with the safetensors weights of a Hugging Face model, "
                    f"not with a {fmt} file",
                    errors=[{"field": "config", "format": fmt}],
                )
            if architecture is not None:
                raise InvalidUpload(
                    "config.json names the architecture; leave the 'architecture' field out",
                    errors=[{"field": "architecture"}],
                )
            fmt = "hf_dir"
        if declared_format and declared_format != fmt:
            raise FormatMismatch(
                f"declared format {declared_format!r} but the content is {fmt}",
                errors=[{"field": "format", "declared": declared_format, "detected": fmt}],
            )
        if fmt == "pickle" and not allow_pickle:
            raise PickleDisabled(
                "pickled models are refused on this deployment (loading one runs code from the file); upload "
                "safetensors weights with an architecture name, a state_dict, or ONNX"
            )
        check_architecture(architecture, fmt)
        details = describe(
            upload.path, fmt, architecture, config_path=config.path if config is not None else None
        )
    except RecursionError:
        # A backstop for JSON nested inside an archive member that the parsers reach first.
        for temp in temps:
            temp.discard()
        raise InvalidUpload("the upload holds JSON nested too deeply to read") from None
    except BaseException:
        for temp in temps:
            temp.discard()
        raise
    model_id = new_id()
    key = model_key(model_id)
    storage.commit(upload, key)
    if config is not None:
        storage.commit(config, config_key(model_id))
        details["config_key"] = config_key(model_id)
    model = Model(
        id=model_id,
        tenant_id=tenant_id,
        sha256=upload.sha256,
        size_bytes=upload.size,
        format=fmt,
        architecture=architecture,
        filename=display_filename(filename),
        storage_key=key,
        details=details,
    )
    stored = [key] if config is None else [config_key(model_id), key]
    commit_stored(session, model, storage=storage, keys=stored)
    return model
