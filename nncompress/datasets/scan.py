"""Validating an uploaded data set in a bounded footprint: what :func:`load_dataset` checks, without
holding the samples.

The API must refuse a malformed upload before it accepts it, but must not hold the samples: a few
KiB of compressed input can declare gigabytes. :func:`scan_dataset` reads headers first (refusing
anything over the :class:`DatasetLimits` before decompressing it), then streams the data: array
values in chunks of 1 MiB, images one at a time. It applies the loader's own checks
(:mod:`nncompress.datasets.checks`) to each chunk, so it refuses what the loader refuses, with the
same message, and returns the :class:`DatasetSummary` the loader's data set would describe. Its
memory is a chunk, one decoded image (at most ``max_image_pixels`` × 3 bytes), a zip's directory
(bounded by ``max_archive_entries``) and one counter per class (bounded by ``max_classes``).

Example:
    >>> summary = scan_dataset("upload.zip", limits=DatasetLimits(max_image_pixels=512 * 512))
    >>> summary.describe()["samples"]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nncompress.datasets.archive import open_zip, sha256_of
from nncompress.datasets.checks import (
    check_finite,
    check_label_header,
    check_label_values,
    check_normalize,
    check_sample_header,
    sample_shape_of,
)
from nncompress.datasets.core import DatasetSummary
from nncompress.datasets.errors import DatasetError
from nncompress.datasets.formats import StoredArray, idx_array, npz_arrays
from nncompress.datasets.imagefolder import class_entries, decoded_images
from nncompress.datasets.limits import DatasetLimits
from nncompress.datasets.load import FORMATS, detect_format

__all__ = ["scan_dataset"]


def scan_dataset(
    path: str | Path,
    *,
    labels_path: str | Path | None = None,
    format: str | None = None,
    normalize: tuple[Sequence[float] | float, Sequence[float] | float] | None = None,
    limits: DatasetLimits | None = None,
) -> DatasetSummary:
    """Validates a data set file as :func:`load_dataset` would, streaming, and summarises it.

    Args:
        path: an ``.npz`` (``x``/``y``), an ImageFolder zip, or the idx images file.
        labels_path: the idx labels file (idx format only).
        format: one of :data:`FORMATS`; detected from the bytes when omitted.
        normalize: ``(mean, std)``, checked against the channel count.
        limits: the caps; defaults of :class:`DatasetLimits` when omitted.

    Returns:
        What :meth:`LabelledDataset.summary` of the loaded data set would return.

    Raises:
        DatasetError: what the loader raises for the same file; :class:`DatasetLimitError` for a cap.
    """
    path = Path(path)
    limits = limits or DatasetLimits()
    fmt = format or detect_format(path, labels_path=labels_path, limits=limits)
    if fmt == "mnist_idx":
        if labels_path is None:
            raise DatasetError("the idx format needs labels_path (the labels file)", file=path.name)
        labels = Path(labels_path)
        x, y = idx_array(path, limits), idx_array(labels, limits)
        return _scan_arrays(
            x,
            y,
            limits,
            normalize,
            source_format=fmt,
            sha256=sha256_of(path, labels),
            source_bytes=path.stat().st_size + labels.stat().st_size,
        )
    if fmt not in FORMATS:
        raise DatasetError(f"unknown data set format {fmt!r}", expected=list(FORMATS), got=fmt)
    with open_zip(path, limits) as (zf, files):
        if fmt == "npz":
            x, y = npz_arrays(zf, files, limits)
            return _scan_arrays(
                x,
                y,
                limits,
                normalize,
                source_format=fmt,
                sha256=sha256_of(path),
                source_bytes=path.stat().st_size,
            )
        classes, entries = class_entries(files)
        limits.check("max_classes", len(classes), "the number of class folders")
        sample_shape: tuple[int, ...] = ()
        for _, img in decoded_images(zf, entries, limits):
            if not sample_shape:
                width, height = img.size
                sample_shape = (len(img.getbands()), height, width)
    if normalize is not None:
        check_normalize(*normalize, sample_shape)
    counts = np.bincount([label for label, _ in entries], minlength=len(classes))
    return DatasetSummary(
        source_format=fmt,
        samples=len(entries),
        num_classes=len(classes),
        class_counts=tuple(int(c) for c in counts),
        sample_shape=sample_shape,
        sha256=sha256_of(path),
        source_bytes=path.stat().st_size,
        class_names=tuple(classes),
    )


def _scan_arrays(
    x: StoredArray,
    y: StoredArray,
    limits: DatasetLimits,
    normalize: tuple[Sequence[float] | float, Sequence[float] | float] | None,
    *,
    source_format: str,
    sha256: str,
    source_bytes: int,
) -> DatasetSummary:
    # The order of from_arrays: samples (header, then every value), labels, then how they pair up.
    check_sample_header(x.dtype, x.shape)
    for start, chunk in x.chunks():
        check_finite(chunk, start, x.shape, fortran=x.fortran)
    check_label_header(y.dtype, y.shape)
    counts = np.zeros(0, dtype=np.int64)
    for start, chunk in y.chunks():
        labels = check_label_values(chunk, start, None)
        if labels.size:
            top = int(labels.max()) + 1
            limits.check("max_classes", top, "the number of classes (the largest label + 1)")
            if top > counts.size:
                counts = np.pad(counts, (0, top - counts.size))
            counts += np.bincount(labels, minlength=counts.size)
    samples, label_count = x.shape[0], y.shape[0]
    if samples != label_count:
        raise DatasetError(
            f"x has {samples} samples but y has {label_count} labels; they must pair up one to one",
            array="y",
            expected=samples,
            got=label_count,
        )
    if samples == 0:
        raise DatasetError(
            "the data set is empty: x and y hold no samples", array="x", expected=">= 1", got=0
        )
    sample_shape = sample_shape_of(x.shape)
    if normalize is not None:
        check_normalize(*normalize, sample_shape)
    return DatasetSummary(
        source_format=source_format,
        samples=samples,
        num_classes=int(counts.size),
        class_counts=tuple(int(c) for c in counts),
        sample_shape=sample_shape,
        sha256=sha256,
        source_bytes=source_bytes,
    )
