"""Functions the converted graph calls at run time, one per ONNX semantics torch lacks as is.

Dimension values (ONNX Shape → Gather → Concat → Reshape chains) are Python ints and lists here,
never tensors, so tracers (torch.export, the TorchScript exporter) see ``x.size(i)`` symbolically and
a dynamic batch survives a later re-export.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "onnx_dims",
    "onnx_dims_arith",
    "onnx_dims_concat",
    "onnx_dims_equal",
    "onnx_dims_gather",
    "onnx_dims_slice",
    "onnx_dims_squeeze",
    "onnx_dims_tensor",
    "onnx_dims_unsqueeze",
    "onnx_dims_where",
    "onnx_flatten",
    "onnx_gather",
    "onnx_mean",
    "onnx_reshape",
    "onnx_reverse_permute",
    "onnx_squeeze",
    "onnx_unsqueeze",
]


def onnx_reshape(
    x: torch.Tensor, shape: Sequence[int] | torch.Tensor, allowzero: bool = False
) -> torch.Tensor:
    """ONNX Reshape: -1 is inferred; 0 copies the input's dimension unless ``allowzero``."""
    # No int() on list entries: they may be symbolic sizes, and int() would pin them to the traced value.
    dims = [int(d) for d in shape.tolist()] if isinstance(shape, torch.Tensor) else list(shape)
    if not allowzero:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def onnx_flatten(x: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Flatten: a 2-D view split before ``axis``."""
    axis = axis % x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), -1)


def onnx_dims(x: torch.Tensor | list[int] | int) -> list[int]:
    """ONNX Shape, as a list of ints (symbolic sizes when traced); of a dimension list, its length."""
    if isinstance(x, list):
        return [len(x)]
    if isinstance(x, int):
        return []
    return [x.size(i) for i in range(x.dim())]


def onnx_dims_gather(dims: list[int], index: int | list[int]) -> int | list[int]:
    """ONNX Gather on a dimension list: a scalar index gives one int, a list gives a list."""
    if isinstance(index, list):
        return [dims[i] for i in index]
    return dims[index]


def onnx_dims_unsqueeze(value: int | list[int]) -> list[int]:
    """ONNX Unsqueeze(axes=[0]) of a dimension: an int becomes a one-element list."""
    return value if isinstance(value, list) else [value]


def onnx_dims_squeeze(value: int | list[int]) -> int | list[int]:
    """ONNX Squeeze of a one-element dimension list: back to an int."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def onnx_dims_concat(parts: list[int | list[int]]) -> list[int]:
    """ONNX Concat(axis=0) of dimension lists."""
    out: list[int] = []
    for part in parts:
        out.extend(part if isinstance(part, list) else [part])
    return out


def onnx_dims_arith(op: str, a: int | list[int], b: int | list[int]) -> int | list[int]:
    """Integer Add/Sub/Mul/Div on dimensions, broadcasting a scalar (ONNX Div on ints truncates)."""
    fn = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.floordiv}[op]
    if isinstance(a, list) or isinstance(b, list):
        left = a if isinstance(a, list) else [a] * len(b)  # type: ignore[arg-type]
        right = b if isinstance(b, list) else [b] * len(left)
        return [fn(x, y) for x, y in zip(left, right, strict=True)]
    return fn(a, b)


def onnx_gather(x: torch.Tensor, index: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Gather along ``axis`` (negative indices count from the end, as in ONNX)."""
    index = index.to(torch.int64)
    index = torch.where(index < 0, index + x.shape[axis], index)
    out = torch.index_select(x, axis, index.reshape(-1))
    return out.reshape([*x.shape[:axis], *index.shape, *x.shape[axis + 1 :]])


def onnx_unsqueeze(x: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """ONNX Unsqueeze: new size-1 dimensions at ``axes`` of the output."""
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def onnx_squeeze(x: torch.Tensor, axes: Sequence[int] | None) -> torch.Tensor:
    """ONNX Squeeze: drop ``axes`` (all size-1 dimensions when None)."""
    if axes is None:
        return x.squeeze()
    for axis in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(axis)
    return x


def onnx_mean(x: torch.Tensor, axes: Sequence[int] | None, keepdim: bool) -> torch.Tensor:
    """ONNX ReduceMean over ``axes`` (all when None)."""
    if axes is None:
        return x.mean().reshape([1] * x.dim()) if keepdim else x.mean()
    return x.mean(dim=tuple(axes), keepdim=keepdim)


def onnx_reverse_permute(x: torch.Tensor) -> torch.Tensor:
    """ONNX Transpose without ``perm``: reverse all dimensions."""
    return x.permute(*reversed(range(x.dim())))


def onnx_dims_tensor(value: int | list[int]) -> torch.Tensor:
    """A dimension value used as data (e.g. fed to a Range or a Cast): an int64 tensor."""
    return torch.tensor(value, dtype=torch.int64)


def onnx_dims_slice(dims: list[int], start: int, end: int, step: int = 1) -> list[int]:
    """ONNX Slice (or Shape's start/end) on a dimension list, with ONNX's clamping of out-of-range ends."""
    return dims[slice(start, end, step)]


def _plain(value: Any) -> Any:
    """A small tensor met among dimension values (a computed mask, a constant) as Python values."""
    return value.tolist() if isinstance(value, torch.Tensor) else value


def onnx_dims_equal(a: int | list[int], b: int | list[int]) -> list[bool] | bool:
    """ONNX Equal on dimension values (how exporters spell "where the target shape is -1")."""
    a, b = _plain(a), _plain(b)
    if isinstance(a, list) or isinstance(b, list):
        left = a if isinstance(a, list) else [a] * len(b)  # type: ignore[arg-type]
        right = b if isinstance(b, list) else [b] * len(left)
        return [x == y for x, y in zip(left, right, strict=True)]
    return a == b


def onnx_dims_where(cond: list[bool], a: int | list[int], b: int | list[int]) -> list[int]:
    """ONNX Where over dimension lists: ``a[i] if cond[i] else b[i]``, scalars broadcast."""
    cond, a, b = _plain(cond), _plain(a), _plain(b)
    left = a if isinstance(a, list) else [a] * len(cond)
    right = b if isinstance(b, list) else [b] * len(cond)
    return [x if c else y for c, x, y in zip(cond, left, right, strict=True)]
