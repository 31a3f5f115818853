"""Model intake: classify an uploaded file by its bytes, check it, and record it.

Nothing here unpickles or executes the upload (design §4): safetensors headers are read as JSON,
``torch.save`` archives are classified by scanning pickle opcodes, ONNX is parsed as protobuf.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import torch
from safetensors import safe_open
from sqlalchemy.orm import Session

from app.db.models import Model
from app.db.types import new_id
from app.errors import FormatMismatch, InvalidUpload, PickleDisabled, UnknownArchitecture, WeightsMismatch
from app.services.pickle_scan import torch_zip_kind
from app.storage import Storage, TempWrite, model_key
from nncompress.errors import ModelLoadError
from nncompress.io.intake import detect_format
from nncompress.models import get, names

FORMATS = ("safetensors", "state_dict", "onnx", "pickle")
WEIGHTS_ONLY = frozenset({"safetensors", "state_dict"})
_UNSAFE_CHARS = re.compile(r"[^\w.\- ]+")


def display_filename(raw: str) -> str:
    """The last path component of ``raw``, without control or path characters (display only)."""
    name = unicodedata.normalize("NFKC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_CHARS.sub("_", name).strip(" .")
    return name[:255] or "upload"


def classify(path: Path) -> str:
    """One of :data:`FORMATS`, from the content only (the file name is never consulted)."""
    try:
        detected = detect_format(path)
    except ModelLoadError as exc:
        raise InvalidUpload(exc.message, errors=[{"code": exc.code, "message": exc.message}]) from None
    return torch_zip_kind(path) if detected == "torch_zip" else detected


def check_architecture(architecture: str | None, fmt: str) -> None:
    if architecture is None:
        if fmt in WEIGHTS_ONLY:
            raise UnknownArchitecture(
                f"a {fmt} file holds weights only: name their architecture in the 'architecture' form field "
                f"(known: {', '.join(names())})",
                errors=[{"field": "architecture", "known": names()}],
            )
        return
    if architecture not in names():
        raise UnknownArchitecture(
            f"unknown architecture {architecture!r}; known: {', '.join(names())}",
            errors=[{"field": "architecture", "value": architecture, "known": names()}],
        )


def check_safetensors_fit(path: Path, architecture: str) -> None:
    """Compares tensor names and shapes in the file's header with the architecture's state_dict."""
    with torch.device("meta"):
        expected = {k: list(v.shape) for k, v in get(architecture).build().state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as handle:  # type: ignore[no-untyped-call]
            found = {k: list(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        raise InvalidUpload(f"the safetensors file cannot be read: {exc}") from None
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = {k: {"file": found[k], "model": expected[k]} for k in sorted(set(found) & set(expected))}
    shapes = {k: v for k, v in shapes.items() if v["file"] != v["model"]}
    if missing or unexpected or shapes:
        parts = [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
        ]
        parts.append(f"shape mismatches {dict(list(shapes.items())[:5])}" if shapes else "")
        raise WeightsMismatch(
            f"the weights do not fit architecture {architecture!r}: " + "; ".join(p for p in parts if p),
            errors=[{"missing": missing, "unexpected": unexpected, "shape_mismatches": shapes}],
        )


def create_model(
    *,
    session: Session,
    tenant_id: str,
    storage: Storage,
    upload: TempWrite,
    filename: str,
    architecture: str | None,
    declared_format: str | None,
    allow_pickle: bool,
) -> Model:
    """Checks an uploaded temp file; if acceptable, moves it to ``models/<id>/upload.bin`` and records it.

    The temp file is deleted on every refusal, and the stored file if the insert fails.

    Raises:
        InvalidUpload, FormatMismatch, PickleDisabled, UnknownArchitecture, WeightsMismatch.
    """
    try:
        fmt = classify(upload.path)
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
        if fmt == "safetensors" and architecture is not None:  # None was refused just above
            check_safetensors_fit(upload.path, architecture)
    except BaseException:
        upload.discard()
        raise
    model_id = new_id()
    key = model_key(model_id)
    storage.commit(upload, key)
    model = Model(
        id=model_id,
        tenant_id=tenant_id,
        sha256=upload.sha256,
        size_bytes=upload.size,
        format=fmt,
        architecture=architecture,
        filename=display_filename(filename),
        storage_key=key,
    )
    try:
        session.add(model)
        session.commit()
    except BaseException:
        session.rollback()
        storage.delete(key)
        raise
    return model
