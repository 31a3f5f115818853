"""Converters for ONNX ops without weights: activations, pooling, shape arithmetic, tensor plumbing."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nncompress.errors import ModelLoadError
from nncompress.io.onnx_import import layers
from nncompress.io.onnx_import.builder import GraphBuilder
from nncompress.io.onnx_import.registry import CONVERTERS, converts, optional_const, symmetric_pads
from nncompress.io.onnx_import.runtime import (
    onnx_dims,
    onnx_dims_arith,
    onnx_dims_concat,
    onnx_dims_gather,
    onnx_dims_slice,
    onnx_dims_squeeze,
    onnx_dims_unsqueeze,
    onnx_flatten,
    onnx_gather,
    onnx_mean,
    onnx_reshape,
    onnx_reverse_permute,
    onnx_squeeze,
    onnx_unsqueeze,
)

__all__: list[str] = []


_ELEMENTWISE: dict[str, Callable[..., Any]] = {
    "Add": operator.add,
    "Sub": operator.sub,
    "Mul": operator.mul,
    "Div": operator.truediv,
    "Relu": F.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "HardSwish": F.hardswish,
    "Sqrt": torch.sqrt,
    "Neg": torch.neg,
    "Exp": torch.exp,
    "Pow": torch.pow,
}


def _elementwise(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    if node.op_type in ("Add", "Sub", "Mul", "Div") and any(i in b.dims for i in node.input):
        a, c = (b.dims_value(i) for i in node.input)
        b.call_dims(node.output[0], onnx_dims_arith, [node.op_type, a, c])
        return
    b.call(node.output[0], _ELEMENTWISE[node.op_type], [b.tensor(i) for i in node.input])


for _name in _ELEMENTWISE:
    CONVERTERS[_name] = _elementwise


@converts("Identity", "Dropout")
def _identity(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    const = b.const(node.input[0])
    if const is not None:
        # Exporters alias equal initializers through Identity (a fresh BatchNorm's running_var is
        # its weight); keep the alias a constant so layers can still take it as a parameter.
        b.consts[node.output[0]] = const
        return
    b.values[node.output[0]] = b.value(node.input[0])


@converts("Constant")
def _constant(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    from onnx import numpy_helper

    if "value" in attrs:
        b.consts[node.output[0]] = torch.from_numpy(np.array(numpy_helper.to_array(attrs["value"])))
        return
    # The scalar and list forms (value_int, value_floats …) the dynamo exporter writes.
    for key, dtype in (
        ("value_int", torch.int64),
        ("value_ints", torch.int64),
        ("value_float", torch.float32),
        ("value_floats", torch.float32),
    ):
        if key in attrs:
            b.consts[node.output[0]] = torch.tensor(attrs[key], dtype=dtype)
            return
    raise ModelLoadError(
        f"Constant {node.name!r}: only tensor, int and float constants are supported", node=node.name
    )


@converts("LeakyRelu")
def _leaky(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    b.call(node.output[0], F.leaky_relu, [b.value(node.input[0]), float(attrs.get("alpha", 0.01))])


@converts("HardSigmoid")
def _hardsigmoid(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    if not (math.isclose(alpha, 1 / 6, rel_tol=1e-5) and beta == 0.5):
        raise ModelLoadError(
            f"HardSigmoid {node.name!r}: only alpha=1/6, beta=0.5 (PyTorch's) is supported", node=node.name
        )
    b.call(node.output[0], F.hardsigmoid, [b.value(node.input[0])])


@converts("Clip")
def _clip(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    low, high = optional_const(b, node, 1), optional_const(b, node, 2)
    kwargs = {
        "min": float(low) if low is not None else attrs.get("min"),
        "max": float(high) if high is not None else attrs.get("max"),
    }
    b.call(node.output[0], torch.clamp, [b.value(node.input[0])], kwargs)


@converts("Gelu")
def _gelu(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    approximate = attrs.get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    b.call(node.output[0], F.gelu, [b.value(node.input[0])], {"approximate": approximate})


@converts("Softmax", "LogSoftmax")
def _softmax(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    fn = F.softmax if node.op_type == "Softmax" else F.log_softmax
    b.call(node.output[0], fn, [b.value(node.input[0])], {"dim": int(attrs.get("axis", -1))})


@converts("MaxPool", "AveragePool")
def _pool(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    kernel = tuple(attrs["kernel_shape"])
    dims = len(kernel)
    if dims != 2:
        raise ModelLoadError(f"{node.op_type} {node.name!r}: only 2-D pooling is supported", node=node.name)
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ModelLoadError(f"{node.op_type} {node.name!r}: auto_pad is not supported", node=node.name)
    padding = symmetric_pads(node, attrs.get("pads", [0] * 2 * dims), dims)
    common = {
        "kernel_size": kernel,
        "stride": tuple(attrs.get("strides", kernel)),
        "padding": padding,
        "ceil_mode": bool(attrs.get("ceil_mode", 0)),
    }
    if node.op_type == "MaxPool":
        if len(node.output) > 1 and node.output[1]:
            raise ModelLoadError(
                f"MaxPool {node.name!r}: the indices output is not supported", node=node.name
            )
        b.call(
            node.output[0],
            F.max_pool2d,
            [b.value(node.input[0])],
            {**common, "dilation": tuple(attrs.get("dilations", [1] * dims))},
        )
    else:
        b.call(
            node.output[0],
            F.avg_pool2d,
            [b.value(node.input[0])],
            {**common, "count_include_pad": bool(attrs.get("count_include_pad", 0))},
        )


@converts("GlobalAveragePool")
def _global_avg(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    b.call(node.output[0], F.adaptive_avg_pool2d, [b.value(node.input[0]), 1])


@converts("ReduceMean")
def _reduce_mean(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    axes_const = optional_const(b, node, 1)
    axes = [int(a) for a in axes_const.tolist()] if axes_const is not None else attrs.get("axes")
    b.call(node.output[0], onnx_mean, [b.value(node.input[0]), axes, bool(attrs.get("keepdims", 1))])


@converts("Flatten")
def _flatten(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    b.call(node.output[0], onnx_flatten, [b.value(node.input[0]), int(attrs.get("axis", 1))])


@converts("Reshape")
def _reshape(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    shape = b.const(node.input[1])
    if node.input[0] in b.dims and shape is not None and shape.numel() <= 1:
        # A dimension value reshaped to 1-D ([n] or [-1]) or to a scalar stays a dimension value.
        fn = onnx_dims_unsqueeze if shape.numel() == 1 else onnx_dims_squeeze
        b.call_dims(node.output[0], fn, [b.value(node.input[0])])
        return
    allowzero = bool(attrs.get("allowzero", 0))
    target = [int(d) for d in shape.tolist()] if shape is not None else b.value(node.input[1])
    if isinstance(target, list) and 0 not in target[1:] and _carries_static_batch(b, node.input[0], target):
        # A fixed-batch export writes the batch into reshape targets ([1, 512]); 0 without allowzero
        # copies the input's first dimension instead, so the converted model runs at any batch, as
        # verification needs (no other 0 in the target, so allowzero meant nothing else here).
        target, allowzero = [0, *target[1:]], False
    b.call(node.output[0], onnx_reshape, [b.value(node.input[0]), target, allowzero])


def _carries_static_batch(b: GraphBuilder, data: str, target: list[int]) -> bool:
    """True when ``target`` keeps a fixed batch dimension in place: same size first, before and after."""
    dims = b.shapes.get(data)
    return (
        b.static_batch is not None
        and bool(target)
        and target[0] == b.static_batch
        and bool(dims)
        and dims[0] == b.static_batch  # type: ignore[index]
    )


@converts("Transpose")
def _transpose(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    perm = attrs.get("perm")
    x = b.value(node.input[0])
    if perm is None:
        b.call(node.output[0], onnx_reverse_permute, [x])
    else:
        b.call(node.output[0], torch.permute, [x, tuple(int(p) for p in perm)])


@converts("Concat")
def _concat(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    consts = [b.const(i) for i in node.input]
    if all(c is not None for c in consts):
        b.consts[node.output[0]] = torch.cat(consts, dim=int(attrs["axis"]))  # type: ignore[arg-type]
        return
    if any(i in b.dims for i in node.input):
        b.call_dims(node.output[0], onnx_dims_concat, [[b.dims_value(i) for i in node.input]])
        return
    b.call(node.output[0], torch.cat, [[b.value(i) for i in node.input]], {"dim": int(attrs["axis"])})


@converts("Shape")
def _shape(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    b.call_dims(node.output[0], onnx_dims, [b.value(node.input[0])])
    if "start" in attrs or "end" in attrs:  # opset 15+: a slice of the shape
        whole = b.values.pop(node.output[0])
        end = attrs.get("end", 2**62)
        b.call_dims(node.output[0], onnx_dims_slice, [whole, int(attrs.get("start", 0)), int(end)])


@converts("Gather")
def _gather(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    if layers.embedding(b, node):
        return
    if node.input[0] in b.dims:
        index = b.dims_value(node.input[1])
        b.call_dims(node.output[0], onnx_dims_gather, [b.value(node.input[0]), index])
        return
    b.call(
        node.output[0],
        onnx_gather,
        [b.value(node.input[0]), b.value(node.input[1]), int(attrs.get("axis", 0))],
    )


@converts("Unsqueeze", "Squeeze")
def _unsqueeze(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    axes_const = optional_const(b, node, 1)
    raw_axes = axes_const.tolist() if axes_const is not None else attrs.get("axes")
    axes: list[int] | None = None if raw_axes is None else [int(a) for a in raw_axes]
    if node.op_type == "Unsqueeze" and axes is None:
        raise ModelLoadError(f"Unsqueeze {node.name!r} names no axes", node=node.name)
    if node.input[0] in b.dims:
        if list(axes or [0]) != [0]:
            raise ModelLoadError(
                f"{node.op_type} {node.name!r}: a dimension value only takes axes [0]", node=node.name
            )
        fn = onnx_dims_unsqueeze if node.op_type == "Unsqueeze" else onnx_dims_squeeze
        b.call_dims(node.output[0], fn, [b.value(node.input[0])])
        return
    const = b.const(node.input[0])
    if const is not None:  # fold: shape arithmetic on constants must stay constant
        fold = onnx_unsqueeze(const, axes or []) if node.op_type == "Unsqueeze" else onnx_squeeze(const, axes)
        b.consts[node.output[0]] = fold
        return
    if node.op_type == "Unsqueeze":
        b.call(node.output[0], onnx_unsqueeze, [b.value(node.input[0]), axes])
    else:
        b.call(node.output[0], onnx_squeeze, [b.value(node.input[0]), axes])


@converts("Cast")
def _cast(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    from onnx import helper

    dtype = torch.from_numpy(np.zeros(0, dtype=helper.tensor_dtype_to_np_dtype(int(attrs["to"])))).dtype
    if node.input[0] in b.dims and not dtype.is_floating_point:
        # Dimensions are ints whatever integer type ONNX names.
        b.values[node.output[0]] = b.value(node.input[0])
        b.dims.add(node.output[0])
        return
    b.call(node.output[0], torch.Tensor.to, [b.tensor(node.input[0]), dtype])
