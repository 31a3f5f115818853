"""The labelled data set every loader returns, and the validation all of them share.

A loader reads its format into two numpy arrays and hands them to :func:`from_arrays`, which
checks them (dtype, raggedness, NaN/inf, label range, lengths), converts images to float32 NCHW
tensors and int64 labels, and records where they came from. Every failure is a
:class:`~nncompress.datasets.errors.DatasetError` that names the array, the index and what was
expected, so an uploader can fix the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from nncompress.datasets.checks import (
    check_finite,
    check_label_header,
    check_label_values,
    check_normalize,
    check_sample_header,
    is_channels_last,
)
from nncompress.datasets.errors import DatasetError

__all__ = ["DatasetSummary", "LabelledDataset", "check_compatible", "from_arrays", "split"]


@dataclass(frozen=True)
class DatasetSummary:
    """What validation learnt about a data set without holding its samples: the API's record of an
    upload, and :meth:`LabelledDataset.summary` of a loaded one (the two agree field for field).

    Attributes:
        source_format: ``"npz"``, ``"mnist_idx"``, ``"imagefolder_zip"`` or ``"arrays"``.
        samples: number of samples.
        num_classes: number of classes (the largest label + 1 unless given).
        class_counts: samples per class, in class-index order.
        sample_shape: shape of one sample as a model takes it, e.g. ``(1, 28, 28)``.
        sha256: hex digest of the source bytes.
        source_bytes: size of the source file(s).
        class_names: folder names of an ImageFolder archive, in class-index order.
    """

    source_format: str
    samples: int
    num_classes: int
    class_counts: tuple[int, ...]
    sample_shape: tuple[int, ...]
    sha256: str
    source_bytes: int
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return self.samples

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: sample count, classes, shapes, sizes and the source digest."""
        return {
            "format": self.source_format,
            "samples": self.samples,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "class_counts": list(self.class_counts),
            "sample_shape": list(self.sample_shape),
            "dtype": "float32",
            "source_bytes": self.source_bytes,
            # What a job holds: float32 samples and int64 labels.
            "tensor_bytes": self.samples * (4 * math.prod(self.sample_shape) + 8),
            "sha256": self.sha256,
        }


class _Shaped(Protocol):
    @property
    def sample_shape(self) -> tuple[int, ...]: ...

    @property
    def num_classes(self) -> int: ...


@dataclass(frozen=True, eq=False)
class LabelledDataset:
    """Validated samples and class labels, ready to batch.

    Attributes:
        x: float32 samples, ``(N, *sample_shape)``; images are ``(N, C, H, W)``.
        y: int64 class indices in ``[0, num_classes)``, shape ``(N,)``.
        num_classes: number of classes (given by the caller, or the largest label + 1).
        source_format: ``"npz"``, ``"mnist_idx"``, ``"imagefolder_zip"`` or ``"arrays"``.
        sha256: hex digest of the source bytes (for two idx files, of both digests joined).
        source_bytes: size of the source file(s) on disk.
        class_names: folder names of an ImageFolder archive, in class-index order.
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    source_format: str
    sha256: str
    source_bytes: int
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)``."""
        return tuple(self.x.shape[1:])

    def subset(self, indices: torch.Tensor) -> LabelledDataset:
        """The samples at ``indices`` (same classes and provenance).

        Args:
            indices: int64 positions.

        Returns:
            A new data set holding copies of the selected rows.
        """
        return LabelledDataset(
            x=self.x[indices],
            y=self.y[indices],
            num_classes=self.num_classes,
            source_format=self.source_format,
            sha256=self.sha256,
            source_bytes=self.source_bytes,
            class_names=self.class_names,
        )

    def batches(
        self, batch_size: int, *, limit: int | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The samples in order as ``(x, y)`` batches (views, no copy): the ``data=`` of the pruners.

        Args:
            batch_size: samples per batch.
            limit: at most this many batches.

        Returns:
            A list of ``(inputs, labels)`` pairs.
        """
        n = len(self) if limit is None else min(len(self), limit * batch_size)
        return [(self.x[s : s + batch_size], self.y[s : s + batch_size]) for s in range(0, n, batch_size)]

    def summary(self) -> DatasetSummary:
        """The data set's :class:`DatasetSummary` (class counts, shapes, provenance)."""
        return DatasetSummary(
            source_format=self.source_format,
            samples=len(self),
            num_classes=self.num_classes,
            class_counts=tuple(torch.bincount(self.y, minlength=self.num_classes).tolist()),
            sample_shape=self.sample_shape,
            sha256=self.sha256,
            source_bytes=self.source_bytes,
            class_names=self.class_names,
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: sample count, classes, shapes, sizes and the source digest."""
        return self.summary().describe()


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    source_format: str = "arrays",
    sha256: str = "",
    source_bytes: int = 0,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    normalize: tuple[Sequence[float] | float, Sequence[float] | float] | None = None,
    input_shape: Sequence[int] | None = None,
) -> LabelledDataset:
    """Validates two arrays and turns them into a :class:`LabelledDataset`.

    ``uint8`` samples are scaled to ``[0, 1]``; ``(N, H, W)`` gains a channel axis;
    ``(N, H, W, C)`` with ``C`` in 1/3/4 becomes ``(N, C, H, W)``.

    Args:
        x: samples, ``(N, ...)``; integer or floating dtype.
        y: class indices, ``(N,)``; an integer dtype, or floats holding whole numbers.
        source_format: recorded in :meth:`LabelledDataset.describe`.
        sha256: digest of the source.
        source_bytes: size of the source.
        num_classes: the model's class count; labels must lie below it. Default: largest label + 1.
        class_names: names of the classes, in index order.
        normalize: ``(mean, std)``, scalars or one value per channel, applied after the uint8 scaling.
        input_shape: the model's input shape, with or without the batch axis; see :func:`check_compatible`.

    Returns:
        The data set.

    Raises:
        DatasetError: naming the array, the first bad index and what was expected.
    """
    xs = _check_samples(x)
    labels = _check_labels(y, num_classes)
    if xs.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"x has {xs.shape[0]} samples but y has {labels.shape[0]} labels; they must pair up one to one",
            array="y",
            expected=int(xs.shape[0]),
            got=int(labels.shape[0]),
        )
    if xs.shape[0] == 0:
        raise DatasetError(
            "the data set is empty: x and y hold no samples", array="x", expected=">= 1", got=0
        )
    classes = num_classes if num_classes is not None else int(labels.max()) + 1
    if class_names is not None and len(class_names) != classes:
        raise DatasetError(
            f"{len(class_names)} class names for {classes} classes",
            array="class_names",
            expected=classes,
            got=len(class_names),
        )
    tensor = _to_tensor(xs)
    if normalize is not None:
        tensor = _normalize(tensor, *normalize)
    dataset = LabelledDataset(
        x=tensor,
        y=torch.from_numpy(labels),
        num_classes=classes,
        source_format=source_format,
        sha256=sha256,
        source_bytes=source_bytes,
        class_names=tuple(class_names) if class_names is not None else None,
    )
    if input_shape is not None:
        check_compatible(dataset, input_shape=input_shape)
    return dataset


def check_compatible(dataset: _Shaped, *, input_shape: Sequence[int], num_classes: int | None = None) -> None:
    """Checks that a data set fits a model: sample shape (channel count first) and class count.

    Args:
        dataset: the data set, or its :class:`DatasetSummary`.
        input_shape: the model's input shape, ``(C, H, W)`` or with a leading batch axis ``(1, C, H, W)``.
        num_classes: the model's output classes; the data set must not have more.

    Raises:
        DatasetError: the channel count, the spatial shape or the class count does not match.
    """
    expected = tuple(int(d) for d in input_shape)
    got = dataset.sample_shape
    if len(expected) == len(got) + 1:
        expected = expected[1:]  # a batch axis
    if len(expected) != len(got):
        raise DatasetError(
            f"samples have shape {list(got)} ({len(got)} axes) but the model takes {list(expected)}",
            array="x",
            expected=list(expected),
            got=list(got),
        )
    if len(got) >= 3 and got[0] != expected[0]:
        raise DatasetError(
            f"samples have {got[0]} channel(s) but the model expects {expected[0]} "
            f"(sample shape {list(got)}, model input {list(expected)})",
            array="x",
            expected=expected[0],
            got=got[0],
        )
    if got != expected:
        raise DatasetError(
            f"samples have shape {list(got)} but the model takes {list(expected)}",
            array="x",
            expected=list(expected),
            got=list(got),
        )
    if num_classes is not None and dataset.num_classes > num_classes:
        raise DatasetError(
            f"the data set has {dataset.num_classes} classes but the model outputs {num_classes}",
            array="y",
            expected=num_classes,
            got=dataset.num_classes,
        )


def split(
    dataset: LabelledDataset, val_fraction: float, seed: int
) -> tuple[LabelledDataset, LabelledDataset]:
    """Splits into train and validation parts, the same way for the same seed.

    Args:
        dataset: the data set.
        val_fraction: share of samples for validation, in ``(0, 1)``.
        seed: seed of the permutation.

    Returns:
        ``(train, val)``; ``val`` holds ``round(N * val_fraction)`` samples (at least one).

    Raises:
        DatasetError: the fraction is out of range or leaves one side empty.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise DatasetError(
            f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}",
            array="val_fraction",
            expected="(0, 1)",
            got=val_fraction,
        )
    n = len(dataset)
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise DatasetError(
            f"cannot split {n} sample(s) with val_fraction={val_fraction}: the training part would be empty",
            array="x",
            expected=">= 2 samples",
            got=n,
        )
    # A private generator: the split depends on the seed alone, not on the global RNG state.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return dataset.subset(order[n_val:]), dataset.subset(order[:n_val])


# -- validation -------------------------------------------------------------------------------------


def _check_samples(x: np.ndarray) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise DatasetError(f"x must be an array, got {type(x).__name__}", array="x")
    check_sample_header(x.dtype, x.shape)
    check_finite(x.reshape(-1), 0, x.shape)
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) grayscale images
    elif is_channels_last(x.shape):
        x = x.transpose(0, 3, 1, 2)
    return x


def _check_labels(y: np.ndarray, num_classes: int | None) -> np.ndarray:
    if not isinstance(y, np.ndarray):
        raise DatasetError(f"y must be an array, got {type(y).__name__}", array="y")
    check_label_header(y.dtype, y.shape)
    return check_label_values(y.reshape(-1), 0, num_classes)


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(255.0)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _normalize(x: torch.Tensor, mean: Sequence[float] | float, std: Sequence[float] | float) -> torch.Tensor:
    check_normalize(mean, std, tuple(x.shape[1:]))
    m = torch.as_tensor(mean, dtype=torch.float32).flatten()
    s = torch.as_tensor(std, dtype=torch.float32).flatten()
    if x.ndim >= 3 and m.numel() > 1:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - m.view(shape)) / s.view(shape)
    return (x - m) / s
