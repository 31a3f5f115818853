"""Data set intake: validate an uploaded labelled data set in a bounded footprint, then record it.

Validation is the engine's :func:`~nncompress.datasets.scan_dataset`: the loader's checks, applied
while streaming (headers first, then array values a chunk at a time and images one at a time), so
the API never holds the samples, and a few KiB that declare gigabytes are refused from their
headers. The caps (:func:`core.dataset_limits.dataset_limits`, from settings) are the ones the job's
loader enforces again. Nothing is unpickled (an object array is refused by its ``.npy`` header). A malformed
upload is a 422 with the loader's message, one over a cap a 413 naming the cap
(``dataset_<cap>_exceeded``), and a job never starts on data that cannot be read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.services.models import commit_stored, display_filename
from app.services.multipart import ReceivedForm
from app.services.pagination import decode_cursor, encode_cursor
from core.db.models import Dataset
from core.db.types import new_id
from core.errors import FormatMismatch, InvalidUpload
from core.storage import Storage, TempWrite
from nncompress.datasets import (
    FORMATS,
    DatasetError,
    DatasetLimits,
    DatasetSummary,
    check_compatible,
    detect_format,
    scan_dataset,
)

# The file parts a data set upload may carry: the samples (npz, zip or idx images), the idx labels,
# and optionally a validation part in the same format (then no split is made).
FILE_FIELD = "file"
EXTRA_FILE_FIELDS = ("labels", "val_file", "val_labels")


def dataset_key(dataset_id: str, role: str) -> str:
    return f"datasets/{dataset_id}/{role}.bin"


@dataclass(frozen=True)
class _Parts:
    form: ReceivedForm

    def path_of(self, role: str) -> Any:
        temp = self.form.files.get(role)
        return temp.path if temp is not None else None

    def display(self, role: str) -> str:
        return display_filename(self.form.filenames.get(role, role))


def parse_normalize(raw: str | None) -> dict[str, Any] | None:
    """The ``normalize`` form field: JSON ``{"mean": m, "std": s}``, numbers or one per channel."""
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    ok = isinstance(value, dict) and set(value) == {"mean", "std"}
    if ok:
        for part in (value["mean"], value["std"]):
            items = part if isinstance(part, list) else [part]
            ok = (
                ok
                and bool(items)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)
            )
        ok = ok and all(s > 0 for s in (value["std"] if isinstance(value["std"], list) else [value["std"]]))
    if not ok:
        raise InvalidUpload(
            'normalize must be JSON {"mean": m, "std": s} with numbers (or one per channel) and std > 0, '
            f"got {raw[:200]!r}",
            errors=[{"field": "normalize"}],
        )
    return value  # type: ignore[no-any-return]


def normalize_tuple(normalize: dict[str, Any] | None) -> tuple[Any, Any] | None:
    """The loaders' ``normalize=(mean, std)`` from the stored form."""
    return (normalize["mean"], normalize["std"]) if normalize else None


def _scan(
    parts: _Parts, images: str, labels: str, fmt: str | None, normalize: Any, limits: DatasetLimits
) -> DatasetSummary:
    path = parts.path_of(images)
    labels_path = parts.path_of(labels)
    try:
        detected = detect_format(path, labels_path=labels_path, limits=limits)
        if fmt is not None and detected != fmt:
            raise FormatMismatch(
                f"declared format {fmt!r} but the {images!r} part is {detected}",
                errors=[{"field": "format", "declared": fmt, "detected": detected}],
            )
        return scan_dataset(
            path, labels_path=labels_path, format=detected, normalize=normalize, limits=limits
        )
    except DatasetError as exc:
        # The loader names the file it read: a temp file. Name the uploaded one instead.
        for role, shown in ((images, parts.display(images)), (labels, parts.display(labels))):
            temp = parts.path_of(role)
            if temp is not None:
                exc.message = exc.message.replace(temp.name, f"{role} ({shown})")
                if exc.context.get("file") == temp.name:
                    exc.context["file"] = role
        exc.context.setdefault("part", images)
        exc.args = (exc.message,)
        raise


def validate_upload(
    form: ReceivedForm, declared_format: str | None, normalize: dict[str, Any] | None, limits: DatasetLimits
) -> tuple[DatasetSummary, DatasetSummary | None]:
    """Validates the upload's parts as the engine's loaders would (every sample and label), streaming.

    Raises:
        DatasetError: malformed data (422 with the loader's message). DatasetLimitError: a part over
        a cap (413). InvalidUpload: parts that do not go together. FormatMismatch: the declared
        format is not what the bytes are.
    """
    parts = _Parts(form)
    if declared_format is not None and declared_format not in FORMATS:
        raise InvalidUpload(
            f"format {declared_format!r} is not one of {', '.join(FORMATS)}", errors=[{"field": "format"}]
        )
    if "val_labels" in form.files and "val_file" not in form.files:
        raise InvalidUpload("a 'val_labels' part needs its 'val_file' part", errors=[{"field": "val_file"}])
    norm = normalize_tuple(normalize)
    train = _scan(parts, "file", "labels", declared_format, norm, limits)
    if "val_file" not in form.files:
        return train, None
    val = _scan(parts, "val_file", "val_labels", train.source_format, norm, limits)
    check_compatible(val, input_shape=train.sample_shape)
    if train.class_names is not None and val.class_names != train.class_names:
        # ImageFolder classes are indexed by sorted folder name: other folders, other indices.
        raise DatasetError(
            f"the validation part's classes {list(val.class_names or ())} differ from the training part's "
            f"{list(train.class_names)}; both archives need the same class folders",
            array="class_names",
            part="val_file",
        )
    if val.num_classes > train.num_classes:
        raise DatasetError(
            f"the validation part has labels up to {val.num_classes - 1}, but the training part has only "
            f"{train.num_classes} classes",
            array="y",
            part="val_file",
            expected=train.num_classes,
            got=val.num_classes,
        )
    return train, val


def create_dataset(
    *,
    session: Session,
    tenant_id: str,
    storage: Storage,
    form: ReceivedForm,
    declared_format: str | None,
    normalize: dict[str, Any] | None,
    limits: DatasetLimits,
) -> Dataset:
    """Validates an uploaded data set; if good, moves its parts to ``datasets/<id>/`` and records it.

    The temp files are deleted on every refusal, and the stored files if the insert fails.
    """
    try:
        train, val = validate_upload(form, declared_format, normalize, limits)
    except BaseException:
        form.discard()
        raise
    dataset_id = new_id()
    files: dict[str, dict[str, Any]] = {}
    temps: dict[str, TempWrite] = dict(form.files)
    for role, temp in temps.items():
        key = dataset_key(dataset_id, role)
        storage.commit(temp, key)
        files[role] = {
            "storage_key": key,
            "sha256": temp.sha256,
            "size_bytes": temp.size,
            "filename": display_filename(form.filenames[role]),
        }
    summary = train.describe()
    summary["val"] = val.describe() if val is not None else None
    dataset = Dataset(
        id=dataset_id,
        tenant_id=tenant_id,
        sha256=train.sha256,
        size_bytes=sum(f["size_bytes"] for f in files.values()),
        format=train.source_format,
        samples=len(train),
        val_samples=len(val) if val is not None else None,
        num_classes=train.num_classes,
        sample_shape=list(train.sample_shape),
        summary=summary,
        normalize=normalize,
        storage_key=files[FILE_FIELD]["storage_key"],
        files=files,
    )
    commit_stored(session, dataset, storage=storage, keys=[f["storage_key"] for f in files.values()])
    return dataset


def list_datasets(
    *, session: Session, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[Dataset], str | None]:
    """The tenant's data sets, newest first, keyset-paginated on ``(created_at, id)``."""
    query = (
        select(Dataset)
        .where(Dataset.tenant_id == tenant_id)
        .order_by(Dataset.created_at.desc(), Dataset.id.desc())
    )
    if cursor:
        at, id = decode_cursor(cursor)
        query = query.where(or_(Dataset.created_at < at, and_(Dataset.created_at == at, Dataset.id < id)))
    rows = list(session.scalars(query.limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


def check_job_dataset(dataset: Dataset, *, input_shape: list[int], num_classes: int | None) -> None:
    """Checks a recorded data set against a model's input shape and class count, with the loader's messages.

    Raises:
        DatasetError: wrong channel count, sample shape, or more classes than the model outputs.
    """
    # The recorded shape and classes: the same check (and message) the worker runs on the samples.
    recorded = DatasetSummary(
        source_format=dataset.format,
        samples=dataset.samples,
        num_classes=dataset.num_classes,
        class_counts=(),
        sample_shape=tuple(dataset.sample_shape),
        sha256=dataset.sha256,
        source_bytes=dataset.size_bytes,
    )
    try:
        check_compatible(recorded, input_shape=input_shape, num_classes=num_classes)
    except DatasetError as exc:
        exc.context["field"] = "dataset_id"
        raise
