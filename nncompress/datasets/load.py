"""One entry point over paths: :func:`load_dataset` sniffs the format and returns a validated data set."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nncompress.datasets.archive import check_directory, open_zip, sha256_of
from nncompress.datasets.core import LabelledDataset, from_arrays
from nncompress.datasets.errors import DatasetError
from nncompress.datasets.formats import idx_array, npz_arrays, read_stored
from nncompress.datasets.imagefolder import class_entries, read_images
from nncompress.datasets.limits import DatasetLimits

__all__ = ["FORMATS", "detect_format", "load_dataset", "load_mnist_idx"]

FORMATS: tuple[str, ...] = ("npz", "mnist_idx", "imagefolder_zip")


def detect_format(
    path: str | Path, *, labels_path: str | Path | None = None, limits: DatasetLimits | None = None
) -> str:
    """Tells the format of an upload from its bytes (never from its name).

    Args:
        path: the file.
        labels_path: a second file; its presence means an idx image/label pair.
        limits: a zip's entry count is checked before its directory is read.

    Returns:
        One of :data:`FORMATS`.

    Raises:
        DatasetError: the bytes are none of the supported formats.
    """
    path = Path(path)
    if labels_path is not None:
        return "mnist_idx"
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":
        check_directory(path, limits or DatasetLimits())
        try:
            with zipfile.ZipFile(path) as zf:
                # Not ZipInfo.is_dir(): it fails on an empty name, which check_zip reports later.
                names = [i.filename for i in zf.infolist() if not i.filename.endswith("/")]
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise DatasetError(
                f"{path.name} looks like a zip but cannot be opened: {exc}", file=path.name
            ) from exc
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return "imagefolder_zip"
    if head[:2] == b"\x1f\x8b" or head[:2] == b"\x00\x00":
        raise DatasetError(
            f"{path.name} looks like an idx file: upload the images and the labels file together",
            file=path.name,
            expected="images + labels",
        )
    raise DatasetError(
        f"{path.name} is not a supported data set (expected .npz, MNIST idx files or an ImageFolder zip)",
        file=path.name,
        expected=list(FORMATS),
    )


def load_dataset(
    path: str | Path,
    *,
    labels_path: str | Path | None = None,
    format: str | None = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    normalize: tuple[Sequence[float] | float, Sequence[float] | float] | None = None,
    limits: DatasetLimits | None = None,
) -> LabelledDataset:
    """Loads and validates a labelled data set from disk, within the limits.

    Every limit is checked from headers before the data it bounds is decompressed or decoded.

    Args:
        path: an ``.npz`` (``x``/``y``), an ImageFolder zip, or the idx images file.
        labels_path: the idx labels file (idx format only).
        format: one of :data:`FORMATS`; detected from the bytes when omitted.
        num_classes: the model's class count (labels must lie below it).
        input_shape: the model's input shape, to check channels and size.
        normalize: ``(mean, std)`` applied after uint8 images are scaled to ``[0, 1]``.
        limits: the caps; defaults of :class:`DatasetLimits` when omitted.

    Returns:
        The validated :class:`LabelledDataset`.

    Raises:
        DatasetError: unsafe, malformed or incompatible data; the message says what and where.
        DatasetLimitError: (a DatasetError) the data set is larger than a cap.

    Example:
        >>> ds = load_dataset("train.npz", num_classes=10, input_shape=(1, 28, 28))
        >>> ds.describe()["samples"]
    """
    path = Path(path)
    limits = limits or DatasetLimits()
    fmt = format or detect_format(path, labels_path=labels_path, limits=limits)
    common = {"num_classes": num_classes, "input_shape": input_shape, "normalize": normalize}
    if fmt == "mnist_idx":
        if labels_path is None:
            raise DatasetError("the idx format needs labels_path (the labels file)", file=path.name)
        return load_mnist_idx(path, labels_path, limits=limits, **common)  # type: ignore[arg-type]
    if fmt not in FORMATS:
        raise DatasetError(f"unknown data set format {fmt!r}", expected=list(FORMATS), got=fmt)
    classes = None
    with open_zip(path, limits) as (zf, files):
        if fmt == "npz":
            x_array, y_array = npz_arrays(zf, files, limits)
            x, y = read_stored(x_array), read_stored(y_array)
        else:
            classes, entries = class_entries(files)
            limits.check("max_classes", len(classes), "the number of class folders")
            x = read_images(zf, entries, limits)
            y = np.array([label for label, _ in entries], dtype=np.int64)
    dataset = from_arrays(
        x,
        y,
        source_format=fmt,
        sha256=sha256_of(path),
        source_bytes=path.stat().st_size,
        class_names=classes,
        **common,  # type: ignore[arg-type]
    )
    return _within_classes(dataset, limits)


def _within_classes(dataset: LabelledDataset, limits: DatasetLimits) -> LabelledDataset:
    # Before anything counts samples per class (describe), which allocates one counter per class.
    limits.check("max_classes", dataset.num_classes, "the number of classes (the largest label + 1)")
    return dataset


def load_mnist_idx(
    images: str | Path,
    labels: str | Path,
    *,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    normalize: tuple[Sequence[float] | float, Sequence[float] | float] | None = None,
    limits: DatasetLimits | None = None,
) -> LabelledDataset:
    """Loads an idx images/labels pair (e.g. ``train-images-idx3-ubyte.gz``), gzip or raw.

    Args:
        images: the images file, ``(N, H, W)`` uint8.
        labels: the labels file, ``(N,)``.
        num_classes: the model's class count.
        input_shape: the model's input shape.
        normalize: ``(mean, std)`` after scaling to ``[0, 1]``; MNIST's usual is ``(0.1307, 0.3081)``.
        limits: the caps (samples, decoded bytes, gzip ratio, classes).

    Returns:
        The validated data set.

    Raises:
        DatasetError: a malformed file, or images and labels that do not pair up.
    """
    images, labels = Path(images), Path(labels)
    limits = limits or DatasetLimits()
    x_array, y_array = idx_array(images, limits), idx_array(labels, limits)
    x, y = read_stored(x_array), read_stored(y_array)
    dataset = from_arrays(
        x,
        y,
        source_format="mnist_idx",
        sha256=sha256_of(images, labels),
        source_bytes=images.stat().st_size + labels.stat().st_size,
        num_classes=num_classes,
        input_shape=input_shape,
        normalize=normalize,
    )
    return _within_classes(dataset, limits)
