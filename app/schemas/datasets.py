"""Bodies of the /v1/datasets endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core.db.models import Dataset


class DatasetFileOut(BaseModel):
    """One uploaded part of a data set."""

    sha256: str
    size_bytes: int
    filename: str = Field(description="the uploaded file name, for display only")


class DatasetOut(BaseModel):
    """An uploaded, validated labelled data set."""

    id: str
    sha256: str = Field(description="digest of the samples (of both idx files for an idx pair)")
    size_bytes: int = Field(description="bytes uploaded, all parts together")
    format: str = Field(description="detected from the bytes: npz | mnist_idx | imagefolder_zip")
    samples: int
    val_samples: int | None = Field(description="samples of the uploaded validation part; null: jobs split")
    num_classes: int
    sample_shape: list[int] = Field(examples=[[1, 28, 28]])
    normalize: dict[str, Any] | None
    summary: dict[str, Any] = Field(description="class counts, class names, dtype, sizes (val: its part's)")
    files: dict[str, DatasetFileOut] = Field(description="file, and labels / val_file / val_labels if given")
    created_at: datetime


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


def dataset_out(row: Dataset) -> DatasetOut:
    """The API view of a data set row (storage keys stay private)."""
    return DatasetOut(
        id=row.id,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        format=row.format,
        samples=row.samples,
        val_samples=row.val_samples,
        num_classes=row.num_classes,
        sample_shape=list(row.sample_shape),
        normalize=row.normalize,
        summary=row.summary,
        files={
            role: DatasetFileOut(sha256=f["sha256"], size_bytes=f["size_bytes"], filename=f["filename"])
            for role, f in row.files.items()
        },
        created_at=row.created_at,
    )
