"""The checks every sample and label array passes, split into a header part (dtype, shape) and a
values part that also runs on a flat chunk of a larger array.

:func:`~nncompress.datasets.core.from_arrays` applies them to whole arrays in the job process; the
streaming validation in the API (:mod:`nncompress.datasets.scan`) applies the same functions chunk
by chunk, so both refuse the same data with the same message and index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nncompress.datasets.errors import DatasetError

__all__ = [
    "CHANNEL_SIZES",
    "check_finite",
    "check_label_header",
    "check_label_values",
    "check_normalize",
    "check_sample_header",
    "sample_shape_of",
]

# A 4-D array whose last axis has one of these sizes (and whose axis 1 does not) is read as
# channels-last (N, H, W, C), the layout numpy/PIL users produce; models take (N, C, H, W).
CHANNEL_SIZES = (1, 3, 4)


def sample_shape_of(shape: Sequence[int]) -> tuple[int, ...]:
    """The shape of one sample once laid out for a model: ``(N, H, W)`` gains a channel axis and
    channels-last ``(N, H, W, C)`` becomes ``(C, H, W)``."""
    if len(shape) == 3:
        return (1, int(shape[1]), int(shape[2]))
    if is_channels_last(shape):
        return (int(shape[3]), int(shape[1]), int(shape[2]))
    return tuple(int(d) for d in shape[1:])


def is_channels_last(shape: Sequence[int]) -> bool:
    return len(shape) == 4 and shape[3] in CHANNEL_SIZES and shape[1] not in CHANNEL_SIZES


def check_sample_header(dtype: np.dtype[Any], shape: Sequence[int]) -> None:
    """Refuses samples of an object, non-numeric dtype, or with no axis per sample.

    Raises:
        DatasetError: naming ``x`` and what was expected.
    """
    if dtype.hasobject:
        raise DatasetError(
            "x is ragged (an object array): every sample must have the same shape",
            array="x",
            expected="a numeric array of shape (N, ...)",
            got="object",
        )
    if dtype.kind not in "uif":
        raise DatasetError(
            f"x has dtype {dtype}; expected an integer or floating dtype (uint8 images or float32)",
            array="x",
            expected="uint8|int|float",
            got=str(dtype),
        )
    if len(shape) < 2:
        raise DatasetError(
            f"x has shape {list(shape)}; expected (N, ...) with at least one axis per sample",
            array="x",
            expected="(N, ...)",
            got=list(shape),
        )


def check_finite(chunk: np.ndarray, start: int, shape: Sequence[int], *, fortran: bool = False) -> None:
    """Refuses a NaN or infinity among floating samples.

    Args:
        chunk: a flat run of the array's values, in storage order.
        start: the position of ``chunk[0]`` in the whole flat array.
        shape: the whole array's shape, to name the index.
        fortran: the array is stored column-major (an ``.npy`` may be).

    Raises:
        DatasetError: naming the first bad index, e.g. ``x[0, 1] is nan``.
    """
    if chunk.dtype.kind != "f":
        return
    bad = ~np.isfinite(chunk)
    if not bad.any():
        return
    flat = int(np.argmax(bad))
    index = tuple(int(i) for i in np.unravel_index(start + flat, tuple(shape), order="F" if fortran else "C"))
    raise DatasetError(
        f"x[{', '.join(map(str, index))}] is {chunk[flat]}; samples must be finite (no NaN or inf)",
        array="x",
        index=list(index),
        got=str(chunk[flat]),
    )


def check_label_header(dtype: np.dtype[Any], shape: Sequence[int]) -> None:
    """Refuses labels that are not one integer (or whole float) per sample: ``(N,)`` or ``(N, 1)``.

    Raises:
        DatasetError: naming ``y`` and what was expected.
    """
    if dtype.hasobject:
        raise DatasetError("y is ragged (an object array); expected one integer label per sample", array="y")
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise DatasetError(
            f"y has shape {list(shape)}; expected (N,) class indices (one-hot labels: take argmax first)",
            array="y",
            expected="(N,)",
            got=list(shape),
        )
    if dtype.kind not in "uif":
        raise DatasetError(
            f"y has dtype {dtype}; expected integer class indices",
            array="y",
            expected="int",
            got=str(dtype),
        )


def check_label_values(chunk: np.ndarray, start: int, num_classes: int | None) -> np.ndarray:
    """Checks a flat run of labels (whole numbers in ``[0, num_classes)``) and returns them as int64.

    Args:
        chunk: labels, flat; ``start`` is the index of the first.
        start: the position of ``chunk[0]`` among all labels.
        num_classes: the upper bound, or ``None`` for none.

    Raises:
        DatasetError: naming the first bad label, e.g. ``y[2] = 10 is out of range [0, 5)``.
    """
    if chunk.dtype.kind == "f":
        integral = np.isfinite(chunk) & (np.floor(chunk) == chunk)
        if not integral.all():
            i = int(np.argmin(integral))
            raise DatasetError(
                f"y[{start + i}] = {chunk[i]} is not an integer class index",
                array="y",
                index=start + i,
                expected="integer",
                got=str(chunk[i]),
            )
    labels = chunk.astype(np.int64)
    if labels.size:
        bad = labels < 0
        if num_classes is not None:
            bad |= labels >= num_classes
        if bad.any():
            i = int(np.argmax(bad))
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise DatasetError(
                f"y[{start + i}] = {labels[i]} is out of range {bound}",
                array="y",
                index=start + i,
                expected=bound,
                got=int(labels[i]),
            )
    return labels


def check_normalize(
    mean: Sequence[float] | float, std: Sequence[float] | float, sample_shape: Sequence[int]
) -> None:
    """Refuses a non-positive std, or per-channel values whose count is not the channel count.

    Raises:
        DatasetError: naming ``normalize``.
    """
    m = np.asarray(mean, dtype=np.float64).reshape(-1)
    s = np.asarray(std, dtype=np.float64).reshape(-1)
    if (s <= 0).any():
        raise DatasetError(f"normalize std must be positive, got {s.tolist()}", array="normalize")
    if len(sample_shape) >= 2 and m.size > 1:
        channels = int(sample_shape[0])
        if m.size != channels or s.size != channels:
            raise DatasetError(
                f"normalize has {m.size} mean(s) and {s.size} std(s) for {channels} channels",
                array="normalize",
                expected=channels,
                got=int(m.size),
            )
