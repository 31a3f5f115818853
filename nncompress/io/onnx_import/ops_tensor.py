"""Converters for the tensor ops transformer, segmentation and mobile exports add to a CNN's op set.

Slicing, splitting, broadcasting, masking (Equal/Where), resizing and friends. Where an op works on a
dimension value (a ``Shape`` result kept as Python ints, see ``GraphBuilder.dims``) it stays on ints,
so reshapes computed from it follow a pruned width.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nncompress.errors import ModelLoadError
from nncompress.io.onnx_import.builder import GraphBuilder
from nncompress.io.onnx_import.registry import CONVERTERS, converts, optional_const
from nncompress.io.onnx_import.runtime import onnx_dims_equal, onnx_dims_slice, onnx_dims_where
from nncompress.io.onnx_import.runtime_tensor import (
    onnx_constant_of_shape,
    onnx_expand,
    onnx_gather_elements,
    onnx_pad,
    onnx_range,
    onnx_reduce,
    onnx_resize,
    onnx_slice,
    onnx_split,
    onnx_split_sequence,
    onnx_tile,
    onnx_trilu,
)

__all__: list[str] = []

_UNARY: dict[str, Callable[..., Any]] = {
    "Erf": torch.erf,
    "Abs": torch.abs,
    "Log": torch.log,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,
    "Sign": torch.sign,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Softplus": F.softplus,
    "Softsign": F.softsign,
    "Mish": F.mish,
    "Not": torch.logical_not,
    "IsNaN": torch.isnan,
    "Selu": F.selu,
}

_BINARY: dict[str, Callable[..., Any]] = {
    "Equal": torch.eq,
    "Less": torch.lt,
    "Greater": torch.gt,
    "LessOrEqual": torch.le,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
    "Max": torch.maximum,
    "Min": torch.minimum,
}


def _unary(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    b.call(node.output[0], _UNARY[node.op_type], [b.tensor(node.input[0])])


def _binary(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    if node.op_type == "Equal" and any(i in b.dims for i in node.input):
        b.call_dims(node.output[0], onnx_dims_equal, [b.dims_value(i) for i in node.input])
        return
    fn = _BINARY[node.op_type]
    inputs = [b.tensor(i) for i in node.input]
    if node.op_type in ("Max", "Min") and len(inputs) > 2:  # variadic in ONNX
        out = inputs[0]
        for other in inputs[1:]:
            out = b.graph.call_function(fn, (out, other))
        b.values[node.output[0]] = out
        return
    b.call(node.output[0], fn, inputs)


for _name in _UNARY:
    CONVERTERS[_name] = _unary
for _name in _BINARY:
    CONVERTERS[_name] = _binary


@converts("CastLike")
def _cast_like(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    like = b.const(node.input[1])
    source = b.const(node.input[0])
    known = b.elem_types.get(node.input[1])
    if source is not None and known:  # a constant cast like an input of known type stays a constant
        from nncompress.io.onnx_import.summary import torch_dtype

        b.consts[node.output[0]] = source.to(torch_dtype(known))
        return
    if like is not None:
        b.call(node.output[0], torch.Tensor.to, [b.tensor(node.input[0]), like.dtype])
        return
    b.call(node.output[0], torch.Tensor.type_as, [b.tensor(node.input[0]), b.tensor(node.input[1])])


@converts("Elu", "Celu")
def _elu(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    fn = F.elu if node.op_type == "Elu" else F.celu
    b.call(node.output[0], fn, [b.value(node.input[0]), float(attrs.get("alpha", 1.0))])


@converts("PRelu")
def _prelu(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    # ONNX slope broadcasts like any binary op; torch's prelu wants a per-channel vector, so spell it out.
    x, slope = b.value(node.input[0]), b.value(node.input[1])
    positive = b.graph.call_function(operator.ge, (x, 0))
    b.call(node.output[0], torch.where, [positive, x, b.graph.call_function(operator.mul, (x, slope))])


@converts("Where")
def _where(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    if any(i in b.dims for i in node.input):
        b.call_dims(node.output[0], onnx_dims_where, [b.dims_value(i) for i in node.input])
        return
    b.call(node.output[0], torch.where, [b.tensor(i) for i in node.input])


@converts("Slice")
def _slice(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    if "starts" in attrs:  # opset < 10 kept them as attributes
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = b.dims_value(node.input[1]), b.dims_value(node.input[2])
        axes = b.dims_value(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        steps = b.dims_value(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if node.input[0] in b.dims:
        # A dimension list is 1-D: one start, one end, one step.
        first = lambda v: v[0] if isinstance(v, list) else v  # noqa: E731 - a local unwrap
        step = 1 if steps is None else first(steps)
        args = [b.value(node.input[0]), first(starts), first(ends), step]
        b.call_dims(node.output[0], onnx_dims_slice, args)
        return
    b.call(node.output[0], onnx_slice, [b.value(node.input[0]), starts, ends, axes, steps])


@converts("Split")
def _split(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    axis = int(attrs.get("axis", 0))
    sizes: Any = attrs.get("split")
    if len(node.input) > 1 and node.input[1]:
        sizes = b.dims_value(node.input[1])
    count = int(attrs.get("num_outputs", len(node.output)))
    parts = b.graph.call_function(onnx_split, (b.value(node.input[0]), sizes, axis, count))
    for index, name in enumerate(node.output):
        if name:
            b.values[name] = b.graph.call_function(operator.getitem, (parts, index))


@converts("SplitToSequence")
def _split_to_sequence(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    # The dynamo exporter's torch.split/chunk without its optimizer; the sequence is a Python tuple.
    axis = int(attrs.get("axis", 0))
    if len(node.input) > 1 and node.input[1]:
        b.call(
            node.output[0], onnx_split_sequence, [b.value(node.input[0]), b.dims_value(node.input[1]), axis]
        )
        return
    keep = bool(attrs.get("keepdims", 1))
    b.call(node.output[0], onnx_split_sequence, [b.value(node.input[0]), 1, axis, keep])


@converts("SequenceAt")
def _sequence_at(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    index = b.dims_value(node.input[1])
    b.call(node.output[0], operator.getitem, [b.value(node.input[0]), index])


@converts("Expand")
def _expand(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    b.call(node.output[0], onnx_expand, [b.tensor(node.input[0]), b.dims_value(node.input[1])])


@converts("ConstantOfShape")
def _constant_of_shape(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    from onnx import numpy_helper

    value = np.array(numpy_helper.to_array(attrs["value"])) if "value" in attrs else np.zeros(1, np.float32)
    fill = torch.from_numpy(value.reshape(-1)[:1].copy())
    args = [b.dims_value(node.input[0]), fill.item(), fill.dtype]
    b.call(node.output[0], onnx_constant_of_shape, args)


@converts("GatherElements")
def _gather_elements(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    args = [b.tensor(node.input[0]), b.tensor(node.input[1]), int(attrs.get("axis", 0))]
    b.call(node.output[0], onnx_gather_elements, args)


@converts("Range")
def _range(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    consts = [b.const(i) for i in node.input]
    args = [
        b.dims_value(i) if c is None else c.reshape(-1)[0].item()
        for i, c in zip(node.input, consts, strict=True)
    ]
    b.call(node.output[0], onnx_range, args)


@converts("Trilu")
def _trilu(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    k_const = optional_const(b, node, 1)
    k: Any = int(k_const.item()) if k_const is not None else 0
    if len(node.input) > 1 and node.input[1] and k_const is None:
        k = b.dims_value(node.input[1])
    b.call(node.output[0], onnx_trilu, [b.value(node.input[0]), k, bool(attrs.get("upper", 1))])


@converts("Tile")
def _tile(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    b.call(node.output[0], onnx_tile, [b.value(node.input[0]), b.dims_value(node.input[1])])


@converts("Pad")
def _pad(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads: Any = attrs.get("pads")
    if len(node.input) > 1 and node.input[1]:
        pads = b.dims_value(node.input[1])
    fill = optional_const(b, node, 2)
    axes = b.dims_value(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    value = (
        float(fill.reshape(-1)[0]) if fill is not None and fill.numel() else float(attrs.get("value", 0.0))
    )
    b.call(node.output[0], onnx_pad, [b.value(node.input[0]), pads, mode, value, axes])


@converts("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare")
def _reduce(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    axes_const = optional_const(b, node, 1)
    axes = [int(a) for a in axes_const.tolist()] if axes_const is not None else attrs.get("axes")
    if not axes and attrs.get("noop_with_empty_axes", 0):
        b.values[node.output[0]] = b.value(node.input[0])
        return
    args = [b.value(node.input[0]), node.op_type, axes, bool(attrs.get("keepdims", 1))]
    b.call(node.output[0], onnx_reduce, args)


@converts("Einsum")
def _einsum(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    equation = attrs["equation"]
    equation = equation.decode() if isinstance(equation, bytes) else equation
    b.call(node.output[0], torch.einsum, [equation, *[b.value(i) for i in node.input]])


@converts("CumSum")
def _cumsum(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    if attrs.get("exclusive", 0) or attrs.get("reverse", 0):
        raise ModelLoadError(f"CumSum {node.name!r}: exclusive/reverse are not supported", node=node.name)
    axis = b.const(node.input[1])
    if axis is None:
        raise ModelLoadError(f"CumSum {node.name!r}: the axis must be a constant", node=node.name)
    b.call(node.output[0], torch.cumsum, [b.value(node.input[0]), int(axis.reshape(-1)[0])])


def _text(value: Any, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


@converts("Resize", "Upsample")
def _resize(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    mode = _text(attrs.get("mode"), "nearest")
    coords = _text(attrs.get("coordinate_transformation_mode"), "half_pixel")
    nearest = _text(attrs.get("nearest_mode"), "round_prefer_floor")
    where = f"Resize {node.name!r} (mode={mode}, coordinate_transformation_mode={coords})"
    if attrs.get("antialias", 0) or attrs.get("exclude_outside", 0) or "axes" in attrs:
        raise ModelLoadError(
            f"{where}: antialias, exclude_outside and axes are not supported", node=node.name
        )
    rank = b.ranks.get(node.input[0], 4)
    spatial = {3: "linear", 4: "bilinear", 5: "trilinear"}.get(rank, "bilinear")
    if mode == "nearest" and coords == "asymmetric" and nearest == "floor":
        torch_mode, align = "nearest", False
    elif (
        mode == "nearest"
        and coords in ("half_pixel", "pytorch_half_pixel")
        and nearest == "round_prefer_ceil"
    ):
        torch_mode, align = "nearest-exact", False
    elif mode == "linear" and coords in ("align_corners", "half_pixel", "pytorch_half_pixel"):
        torch_mode, align = spatial, coords == "align_corners"
    elif mode == "cubic" and rank == 4 and abs(float(attrs.get("cubic_coeff_a", -0.75)) + 0.75) < 1e-6:
        torch_mode, align = "bicubic", coords == "align_corners"
    else:
        raise ModelLoadError(
            f"{where}: no matching torch interpolation (nearest_mode={nearest})", node=node.name
        )
    inputs = list(node.input)
    scale_name = inputs[1] if node.op_type == "Upsample" else (inputs[2] if len(inputs) > 2 else "")
    size_name = "" if node.op_type == "Upsample" else (inputs[3] if len(inputs) > 3 else "")
    sizes = b.dims_value(size_name) if size_name else None
    scales: list[float] | None = None
    if sizes is None:
        const = b.const(scale_name) if scale_name else None
        if const is None or const.numel() == 0:
            raise ModelLoadError(
                f"{where}: the scales must be constant when no sizes are given", node=node.name
            )
        scales = [float(s) for s in const.reshape(-1).tolist()]
        if scales[:2] != [1.0, 1.0]:
            raise ModelLoadError(f"{where}: only spatial axes may be resized", node=node.name)
    b.call(node.output[0], onnx_resize, [b.value(inputs[0]), sizes, scales, torch_mode, align])
