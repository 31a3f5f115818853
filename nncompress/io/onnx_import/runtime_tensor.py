"""Run-time functions for ONNX tensor ops whose semantics differ from the nearest torch call.

Shape-like arguments (``shape``, ``sizes``, ``starts``) arrive as Python ints or lists when the graph
computed them from ``Shape`` (symbolic under tracing, see :mod:`runtime`), and as tensors otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "onnx_constant_of_shape",
    "onnx_expand",
    "onnx_gather_elements",
    "onnx_layer_norm",
    "onnx_pad",
    "onnx_range",
    "onnx_reduce",
    "onnx_resize",
    "onnx_slice",
    "onnx_split",
    "onnx_split_sequence",
    "onnx_tile",
    "onnx_trilu",
]


def _ints(value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return list(value) if isinstance(value, list | tuple) else [value]


def onnx_slice(x: torch.Tensor, starts: Any, ends: Any, axes: Any = None, steps: Any = None) -> torch.Tensor:
    """ONNX Slice: per-axis ``start:end:step`` with ONNX clamping; negative steps reverse."""
    begin, end = _ints(starts), _ints(ends)
    axes_list = _ints(axes) if axes is not None else list(range(len(begin)))
    step_list = _ints(steps) if steps is not None else [1] * len(begin)
    index: list[Any] = [slice(None)] * x.dim()
    flips: list[int] = []
    for b, e, a, s in zip(begin, end, axes_list, step_list, strict=True):
        axis = a % x.dim()
        if s > 0:
            index[axis] = slice(b, e, s)
            continue
        # torch has no negative-step slicing: take the equivalent positive range, then flip it.
        size = x.shape[axis]
        picked = list(range(size))[slice(b, e, s)]
        x = x.index_select(axis, torch.tensor(picked[::-1], dtype=torch.int64, device=x.device))
        flips.append(axis)
    out = x[tuple(index)]
    return out.flip(flips) if flips else out


def onnx_split(x: torch.Tensor, sizes: Any, axis: int, count: int) -> tuple[torch.Tensor, ...]:
    """ONNX Split into explicit ``sizes``, or ``count`` parts (the last one smaller when uneven)."""
    if sizes is not None:
        return tuple(torch.split(x, _ints(sizes), dim=axis))
    length = x.shape[axis]
    chunk = -(-length // count)
    return tuple(torch.split(x, chunk, dim=axis))


def onnx_split_sequence(
    x: torch.Tensor, split: Any, axis: int, keepdims: bool = True
) -> tuple[torch.Tensor, ...]:
    """ONNX SplitToSequence: a scalar ``split`` is a chunk size, a list gives the sizes."""
    sizes: Any = split if isinstance(split, int) else _ints(split)
    if isinstance(split, torch.Tensor) and split.dim() == 0:
        sizes = int(split)
    parts = tuple(torch.split(x, sizes, dim=axis))
    return parts if keepdims else tuple(p.squeeze(axis) for p in parts)


def onnx_expand(x: torch.Tensor, shape: Any) -> torch.Tensor:
    """ONNX Expand: two-way broadcasting of ``x`` against ``shape`` (a 1 in ``shape`` keeps x's size)."""
    target = torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape)))
    return x.expand(target)


def onnx_constant_of_shape(shape: Any, fill: float | int | bool, dtype: torch.dtype) -> torch.Tensor:
    """ONNX ConstantOfShape: a tensor of ``shape`` filled with ``fill``."""
    return torch.full(_ints(shape), fill, dtype=dtype)


def onnx_layer_norm(
    x: torch.Tensor, axis: int, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """ONNX LayerNormalization over the axes from ``axis`` on (when it is not one nn.LayerNorm)."""
    shape = x.shape[axis % x.dim() :]
    return F.layer_norm(x, shape, weight.expand(shape), None if bias is None else bias.expand(shape), eps)


def onnx_range(start: Any, limit: Any, delta: Any) -> torch.Tensor:
    """ONNX Range; integer inputs give int64, float inputs keep their dtype."""
    values = [v.reshape(-1)[0] if isinstance(v, torch.Tensor) else v for v in (start, limit, delta)]
    dtype = next((v.dtype for v in values if isinstance(v, torch.Tensor)), torch.int64)
    plain = [v.item() if isinstance(v, torch.Tensor) else v for v in values]
    return torch.arange(plain[0], plain[1], plain[2], dtype=dtype)


def onnx_gather_elements(x: torch.Tensor, index: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX GatherElements: ``torch.gather`` with negative indices counted from the end."""
    index = index.to(torch.int64)
    index = torch.where(index < 0, index + x.shape[axis], index)
    return torch.gather(x, axis, index)


def onnx_trilu(x: torch.Tensor, k: int, upper: bool) -> torch.Tensor:
    """ONNX Trilu: the upper (``triu``) or lower (``tril``) triangle from diagonal ``k``."""
    return torch.triu(x, k) if upper else torch.tril(x, k)


def onnx_tile(x: torch.Tensor, repeats: Any) -> torch.Tensor:
    """ONNX Tile: ``repeats[i]`` copies along axis i."""
    return x.repeat(_ints(repeats))


def onnx_pad(x: torch.Tensor, pads: Any, mode: str, value: float, axes: Any = None) -> torch.Tensor:
    """ONNX Pad (begins for every axis, then ends) as ``F.pad`` (last axis first, begin/end pairs)."""
    flat = _ints(pads)
    axes_list = [a % x.dim() for a in _ints(axes)] if axes is not None else list(range(x.dim()))
    half = len(axes_list)
    per_axis = {a: (flat[i], flat[i + half]) for i, a in enumerate(axes_list)}
    torch_pads: list[int] = []
    for axis in reversed(range(x.dim())):
        torch_pads.extend(per_axis.get(axis, (0, 0)))
    if mode == "constant":
        return F.pad(x, torch_pads, mode="constant", value=value)
    # torch pads the trailing dims only; strip the unpadded leading pairs it would refuse.
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    return F.pad(x, torch_pads, mode={"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode])


_REDUCE: dict[str, Callable[..., torch.Tensor]] = {
    "ReduceSum": torch.sum,
    "ReduceMean": torch.mean,
    "ReduceMax": torch.amax,
    "ReduceMin": torch.amin,
}


def onnx_reduce(x: torch.Tensor, op: str, axes: Sequence[int] | None, keepdim: bool) -> torch.Tensor:
    """ONNX ReduceSum/Mean/Max/Min/Prod/L2/SumSquare over ``axes`` (all when None or empty)."""
    dims = tuple(range(x.dim())) if not axes else tuple(a % x.dim() for a in axes)
    if op == "ReduceL2":
        return torch.sqrt(torch.sum(x * x, dim=dims, keepdim=keepdim))
    if op == "ReduceSumSquare":
        return torch.sum(x * x, dim=dims, keepdim=keepdim)
    if op == "ReduceProd":
        for axis in sorted(dims, reverse=True):
            x = torch.prod(x, dim=axis, keepdim=keepdim)
        return x
    return _REDUCE[op](x, dim=dims, keepdim=keepdim)


def onnx_resize(
    x: torch.Tensor,
    sizes: Any,
    scales: list[float] | None,
    mode: str,
    align_corners: bool,
) -> torch.Tensor:
    """ONNX Resize over the spatial axes as ``F.interpolate`` (the converter checked the mapping)."""
    align = align_corners if mode not in ("nearest", "nearest-exact") else None
    if sizes is not None:
        return F.interpolate(x, size=_ints(sizes)[2:], mode=mode, align_corners=align)
    return F.interpolate(x, scale_factor=(scales or [])[2:], mode=mode, align_corners=align)
