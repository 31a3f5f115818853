"""Feeding calibration batches to onnxruntime's quantizer."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader

from nncompress.quantize.config import QuantConfigError

__all__ = ["BatchReader", "input_arrays"]


def input_arrays(batch: Any, count: int) -> tuple[np.ndarray, ...]:
    """The first ``count`` tensors of a batch as numpy arrays.

    A batch is one tensor, or a tuple/list whose first ``count`` items are the model's inputs: a
    ``(inputs, labels)`` pair from a DataLoader works as it is, its labels are ignored.

    Raises:
        QuantConfigError: the batch is not made of tensors or arrays.
    """
    items = (batch,) if isinstance(batch, (torch.Tensor, np.ndarray)) else tuple(batch)
    if len(items) < count:
        raise QuantConfigError(
            f"calibration: a batch holds {len(items)} tensors but the model takes {count} inputs",
            key="calibration",
            expected=f"batches of {count} input tensors (labels after them are ignored)",
        )
    out = []
    for item in items[:count]:
        if isinstance(item, torch.Tensor):
            out.append(item.detach().cpu().numpy())
        elif isinstance(item, np.ndarray):
            out.append(item)
        else:
            raise QuantConfigError(
                f"calibration: expected tensors or numpy arrays in each batch, got {type(item).__name__}",
                key="calibration",
                expected="torch.Tensor or numpy.ndarray",
            )
    return tuple(out)


class BatchReader(CalibrationDataReader):
    """Gives onnxruntime at most ``limit`` batches from an iterable, as ``{input name: array}``.

    Args:
        batches: any iterable of batches (a DataLoader, a list of tensors ...).
        input_names: the ONNX graph's input names, in ``forward`` order.
        limit: the most batches read (the spec's ``calibration_batches``).
    """

    def __init__(self, batches: Iterable[Any], input_names: tuple[str, ...], limit: int) -> None:
        self._batches: Iterator[Any] = itertools.islice(iter(batches), limit)
        self._names = input_names
        self.seen = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.seen += 1
        arrays = input_arrays(batch, len(self._names))
        return {name: _as_graph_dtype(a) for name, a in zip(self._names, arrays, strict=True)}


def _as_graph_dtype(array: np.ndarray) -> np.ndarray:
    # Float inputs are exported as float32; token ids as int64.
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    return array.astype(np.int64, copy=False)
