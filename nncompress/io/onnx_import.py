"""ONNX → ``torch.fx.GraphModule``, so an ONNX upload can be pruned like any other model.

Why our own converter: onnx2torch (the usual choice) imports torchvision, and the only torchvision
wheel available here is built against CUDA torch and fails to load next to the CPU build of torch
2.13 (``operator torchvision::nms does not exist``). The graphs a pruning service sees are CNN and
MLP classifiers, so a small, explicit op table is enough; any other op is refused by name.

Layers with weights become real modules (``nn.Conv2d``, ``nn.Linear``, ``nn.BatchNorm2d`` …) named
after their ONNX initializers (``conv1.weight`` → module ``conv1``), so config_lists written for the
original PyTorch model select the same layers and the pruners see ordinary layer types.
"""

from __future__ import annotations

import keyword
import math
import operator
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from nncompress.errors import ModelLoadError

__all__ = ["SUPPORTED_OPS", "load_onnx"]


def load_onnx(path: str | Path) -> fx.GraphModule:
    """Converts an ONNX file into a ``GraphModule`` that computes the same function.

    Args:
        path: the ``.onnx`` file. Tensors stored as external data are refused: their paths come
            from the file and could point anywhere on disk.

    Returns:
        The converted model in eval mode.

    Raises:
        ModelLoadError: external data, a malformed graph, or an unsupported op (named, with the list
            of supported ones).
    """
    import onnx
    from onnx import external_data_helper, numpy_helper, shape_inference

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"the ONNX file cannot be parsed: {exc}") from exc
    for tensor in _all_tensors(proto.graph):
        if external_data_helper.uses_external_data(tensor):
            raise ModelLoadError(
                f"ONNX tensor {tensor.name!r} is stored as external data, which is refused; "
                "export with all tensors inside the .onnx file",
                tensor=tensor.name,
            )
    unsupported = sorted({n.op_type for n in proto.graph.node if n.op_type not in _CONVERTERS})
    if unsupported:
        raise ModelLoadError(
            f"the ONNX graph uses ops this converter does not support: {', '.join(unsupported)} "
            f"(supported: {', '.join(sorted(_CONVERTERS))})",
            ops=unsupported,
        )
    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception:
        inferred = proto
    ranks = _value_ranks(inferred.graph)
    initializers = {
        t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer
    }
    builder = _Builder(initializers, ranks)
    for value in proto.graph.input:
        if value.name not in initializers:
            builder.add_input(value.name)
    for node in proto.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        try:
            _CONVERTERS[node.op_type](builder, node, attrs)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"cannot convert ONNX node {node.name or node.op_type!r} ({node.op_type}): {exc}",
                node=node.name,
                op=node.op_type,
            ) from exc
    return builder.finish([o.name for o in proto.graph.output]).eval()


class _Builder:
    """Accumulates fx nodes and modules while walking the ONNX graph in topological order."""

    def __init__(self, initializers: dict[str, torch.Tensor], ranks: dict[str, int]) -> None:
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.values: dict[str, fx.Node] = {}
        self.consts = initializers
        self.ranks = ranks
        # ONNX values that hold tensor *dimensions* (Shape → Gather → Concat → Reshape chains). They
        # are kept as Python ints and lists in the graph, so tracers see x.size(0) symbolically and
        # the batch dimension stays dynamic when the converted model is exported again.
        self.dims: set[str] = set()
        self._used_names: set[str] = set()

    def add_input(self, name: str) -> None:
        self.values[name] = self.graph.placeholder(self._unique(_identifier(name)))

    def const(self, name: str) -> torch.Tensor | None:
        return self.consts.get(name)

    def value(self, name: str) -> fx.Node:
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            # A constant used as data (not as a layer weight) becomes a buffer of the root.
            attr = self._unique("const_" + _identifier(name))
            self.root.register_buffer(attr, self.consts[name], persistent=True)
            node = self.graph.get_attr(attr)
            self.values[name] = node
            return node
        raise ModelLoadError(f"ONNX value {name!r} is used before it is produced", value=name)

    def add_module(self, weight_name: str, fallback: str, module: nn.Module) -> str:
        path = weight_name.rsplit(".", 1)[0] if weight_name.endswith(".weight") else ""
        if not path or not all(
            part.isidentifier() and not keyword.iskeyword(part) for part in path.split(".")
        ):
            path = _identifier(fallback)
        path = self._unique(path)
        parent = self.root
        parts = path.split(".")
        for part in parts[:-1]:
            child = getattr(parent, part, None)
            if not isinstance(child, nn.Module):
                child = nn.Module()
                parent.add_module(part, child)
            parent = child
        parent.add_module(parts[-1], module)
        return path

    def call_module(self, out: str, path: str, args: Sequence[Any]) -> None:
        self.values[out] = self.graph.call_module(path, tuple(args))

    def dims_value(self, name: str) -> Any:
        """A dimension value as the graph uses it: an fx node, or a constant as Python ints."""
        const = self.const(name)
        if const is not None:
            return [int(v) for v in const.reshape(-1).tolist()] if const.dim() else int(const)
        return self.value(name)

    def call_dims(self, out: str, fn: Callable[..., Any], args: Sequence[Any]) -> None:
        self.call(out, fn, args)
        self.dims.add(out)

    def call(
        self, out: str, fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any] | None = None
    ) -> None:
        self.values[out] = self.graph.call_function(fn, tuple(args), kwargs or {})

    def finish(self, outputs: list[str]) -> fx.GraphModule:
        nodes = [self.value(name) for name in outputs]
        self.graph.output(nodes[0] if len(nodes) == 1 else tuple(nodes))
        gm = fx.GraphModule(self.root, self.graph, class_name="OnnxModule")
        gm.graph.lint()
        return gm

    def _unique(self, name: str) -> str:
        candidate, index = name, 1
        while candidate in self._used_names:
            candidate = f"{name}_{index}"
            index += 1
        self._used_names.add(candidate)
        return candidate


def _identifier(name: str) -> str:
    text = re.sub(r"\W", "_", name).strip("_") or "v"
    return f"v_{text}" if text[0].isdigit() or keyword.iskeyword(text) else text


def _all_tensors(graph: Any) -> list[Any]:
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
    return tensors


def _value_ranks(graph: Any) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            ranks[info.name] = len(tensor_type.shape.dim)
    return ranks


# --- helpers the generated graph calls (kept module-level so GraphModule code can reference them) ---


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


def onnx_dims(x: torch.Tensor) -> list[int]:
    """ONNX Shape, as a list of ints (symbolic sizes when traced)."""
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


# --- op converters ---------------------------------------------------------------------------------

Converter = Callable[[_Builder, Any, dict[str, Any]], None]
_CONVERTERS: dict[str, Converter] = {}


def _op(*names: str) -> Callable[[Converter], Converter]:
    def wrap(fn: Converter) -> Converter:
        for name in names:
            _CONVERTERS[name] = fn
        return fn

    return wrap


def _required_const(b: _Builder, node: Any, index: int, what: str) -> torch.Tensor:
    value = b.const(node.input[index]) if len(node.input) > index and node.input[index] else None
    if value is None:
        raise ModelLoadError(
            f"{node.op_type} {node.name!r}: {what} must be a constant initializer",
            node=node.name,
            op=node.op_type,
        )
    return value


def _optional_const(b: _Builder, node: Any, index: int) -> torch.Tensor | None:
    if len(node.input) > index and node.input[index]:
        return _required_const(b, node, index, f"input {index}")
    return None


def _symmetric_pads(node: Any, pads: Sequence[int], dims: int) -> tuple[int, ...]:
    begin, end = tuple(pads[:dims]), tuple(pads[dims:])
    if begin != end:
        raise ModelLoadError(
            f"{node.op_type} {node.name!r}: asymmetric padding {list(pads)} is not supported", node=node.name
        )
    return begin


@_op("Conv")
def _conv(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    weight = _required_const(b, node, 1, "the weight")
    bias = _optional_const(b, node, 2)
    dims = weight.dim() - 2
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ModelLoadError(f"Conv {node.name!r}: auto_pad is not supported", node=node.name)
    groups = int(attrs.get("group", 1))
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    conv = cls(
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=tuple(attrs.get("strides", [1] * dims)),
        padding=_symmetric_pads(node, attrs.get("pads", [0] * 2 * dims), dims),
        dilation=tuple(attrs.get("dilations", [1] * dims)),
        groups=groups,
        bias=bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    path = b.add_module(node.input[1], node.name or "conv", conv)
    b.call_module(node.output[0], path, [b.value(node.input[0])])


@_op("Gemm")
def _gemm(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    if attrs.get("transA", 0):
        raise ModelLoadError(f"Gemm {node.name!r}: transA=1 is not supported", node=node.name)
    weight = _required_const(b, node, 1, "B")
    bias = _optional_const(b, node, 2)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    weight = weight if attrs.get("transB", 0) else weight.t()
    if bias is not None and bias.numel() not in (1, weight.shape[0]):
        raise ModelLoadError(
            f"Gemm {node.name!r}: bias of shape {list(bias.shape)} is not per output", node=node.name
        )
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        # Fold alpha and beta into the layer so the result is a plain nn.Linear.
        linear.weight.copy_(weight * alpha)
        if bias is not None:
            linear.bias.copy_(bias.reshape(-1).expand(weight.shape[0]) * beta)
    path = b.add_module(node.input[1], node.name or "linear", linear)
    b.call_module(node.output[0], path, [b.value(node.input[0])])


@_op("MatMul")
def _matmul(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    weight = b.const(node.input[1])
    if weight is not None and weight.dim() == 2:
        linear = nn.Linear(weight.shape[0], weight.shape[1], bias=False)
        with torch.no_grad():
            linear.weight.copy_(weight.t())
        path = b.add_module(node.input[1], node.name or "matmul", linear)
        b.call_module(node.output[0], path, [b.value(node.input[0])])
        return
    b.call(node.output[0], torch.matmul, [b.value(node.input[0]), b.value(node.input[1])])


@_op("BatchNormalization")
def _batchnorm(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    scale, shift = _required_const(b, node, 1, "scale"), _required_const(b, node, 2, "B")
    mean, var = _required_const(b, node, 3, "mean"), _required_const(b, node, 4, "var")
    rank = b.ranks.get(node.input[0], 4)
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
    if cls is None:
        raise ModelLoadError(f"BatchNormalization {node.name!r} on a rank-{rank} input", node=node.name)
    bn = cls(
        scale.numel(), eps=float(attrs.get("epsilon", 1e-5)), momentum=1 - float(attrs.get("momentum", 0.9))
    )
    with torch.no_grad():
        bn.weight.copy_(scale)
        bn.bias.copy_(shift)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    path = b.add_module(node.input[1], node.name or "bn", bn)
    b.call_module(node.output[0], path, [b.value(node.input[0])])


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


def _elementwise(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    if node.op_type in ("Add", "Sub", "Mul", "Div") and any(i in b.dims for i in node.input):
        a, c = (b.dims_value(i) for i in node.input)
        b.call_dims(node.output[0], onnx_dims_arith, [node.op_type, a, c])
        return
    b.call(node.output[0], _ELEMENTWISE[node.op_type], [b.value(i) for i in node.input])


for _name in _ELEMENTWISE:
    _CONVERTERS[_name] = _elementwise


@_op("Identity", "Dropout")
def _identity(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    const = b.const(node.input[0])
    if const is not None:
        # Exporters alias equal initializers through Identity (a fresh BatchNorm's running_var is
        # its weight); keep the alias a constant so layers can still take it as a parameter.
        b.consts[node.output[0]] = const
        return
    b.values[node.output[0]] = b.value(node.input[0])


@_op("Constant")
def _constant(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    from onnx import numpy_helper

    if "value" not in attrs:
        raise ModelLoadError(
            f"Constant {node.name!r}: only tensor 'value' constants are supported", node=node.name
        )
    b.consts[node.output[0]] = torch.from_numpy(np.array(numpy_helper.to_array(attrs["value"])))


@_op("LeakyRelu")
def _leaky(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    b.call(node.output[0], F.leaky_relu, [b.value(node.input[0]), float(attrs.get("alpha", 0.01))])


@_op("HardSigmoid")
def _hardsigmoid(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    if not (math.isclose(alpha, 1 / 6, rel_tol=1e-5) and beta == 0.5):
        raise ModelLoadError(
            f"HardSigmoid {node.name!r}: only alpha=1/6, beta=0.5 (PyTorch's) is supported", node=node.name
        )
    b.call(node.output[0], F.hardsigmoid, [b.value(node.input[0])])


@_op("Clip")
def _clip(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    low, high = _optional_const(b, node, 1), _optional_const(b, node, 2)
    kwargs = {
        "min": float(low) if low is not None else attrs.get("min"),
        "max": float(high) if high is not None else attrs.get("max"),
    }
    b.call(node.output[0], torch.clamp, [b.value(node.input[0])], kwargs)


@_op("Gelu")
def _gelu(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    approximate = attrs.get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    b.call(node.output[0], F.gelu, [b.value(node.input[0])], {"approximate": approximate})


@_op("Softmax", "LogSoftmax")
def _softmax(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    fn = F.softmax if node.op_type == "Softmax" else F.log_softmax
    b.call(node.output[0], fn, [b.value(node.input[0])], {"dim": int(attrs.get("axis", -1))})


@_op("MaxPool", "AveragePool")
def _pool(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    kernel = tuple(attrs["kernel_shape"])
    dims = len(kernel)
    if dims != 2:
        raise ModelLoadError(f"{node.op_type} {node.name!r}: only 2-D pooling is supported", node=node.name)
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ModelLoadError(f"{node.op_type} {node.name!r}: auto_pad is not supported", node=node.name)
    padding = _symmetric_pads(node, attrs.get("pads", [0] * 2 * dims), dims)
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


@_op("GlobalAveragePool")
def _global_avg(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    b.call(node.output[0], F.adaptive_avg_pool2d, [b.value(node.input[0]), 1])


@_op("ReduceMean")
def _reduce_mean(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    axes_const = _optional_const(b, node, 1)
    axes = [int(a) for a in axes_const.tolist()] if axes_const is not None else attrs.get("axes")
    b.call(node.output[0], onnx_mean, [b.value(node.input[0]), axes, bool(attrs.get("keepdims", 1))])


@_op("Flatten")
def _flatten(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    b.call(node.output[0], onnx_flatten, [b.value(node.input[0]), int(attrs.get("axis", 1))])


@_op("Reshape")
def _reshape(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    shape = b.const(node.input[1])
    target = [int(d) for d in shape.tolist()] if shape is not None else b.value(node.input[1])
    b.call(node.output[0], onnx_reshape, [b.value(node.input[0]), target, bool(attrs.get("allowzero", 0))])


@_op("Transpose")
def _transpose(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    perm = attrs.get("perm")
    x = b.value(node.input[0])
    if perm is None:
        b.call(node.output[0], onnx_reverse_permute, [x])
    else:
        b.call(node.output[0], torch.permute, [x, tuple(int(p) for p in perm)])


def onnx_reverse_permute(x: torch.Tensor) -> torch.Tensor:
    """ONNX Transpose without ``perm``: reverse all dimensions."""
    return x.permute(*reversed(range(x.dim())))


@_op("Concat")
def _concat(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    consts = [b.const(i) for i in node.input]
    if all(c is not None for c in consts):
        b.consts[node.output[0]] = torch.cat(consts, dim=int(attrs["axis"]))  # type: ignore[arg-type]
        return
    if any(i in b.dims for i in node.input):
        b.call_dims(node.output[0], onnx_dims_concat, [[b.dims_value(i) for i in node.input]])
        return
    b.call(node.output[0], torch.cat, [[b.value(i) for i in node.input]], {"dim": int(attrs["axis"])})


@_op("Shape")
def _shape(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    if "start" in attrs or "end" in attrs:
        raise ModelLoadError(f"Shape {node.name!r}: start/end are not supported", node=node.name)
    b.call_dims(node.output[0], onnx_dims, [b.value(node.input[0])])


@_op("Gather")
def _gather(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    if node.input[0] in b.dims:
        index = b.dims_value(node.input[1])
        b.call_dims(node.output[0], onnx_dims_gather, [b.value(node.input[0]), index])
        return
    b.call(
        node.output[0],
        onnx_gather,
        [b.value(node.input[0]), b.value(node.input[1]), int(attrs.get("axis", 0))],
    )


@_op("Unsqueeze", "Squeeze")
def _unsqueeze(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    axes_const = _optional_const(b, node, 1)
    axes = [int(a) for a in axes_const.tolist()] if axes_const is not None else attrs.get("axes")
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
        fold = onnx_unsqueeze(const, list(axes)) if node.op_type == "Unsqueeze" else onnx_squeeze(const, axes)
        b.consts[node.output[0]] = fold
        return
    if node.op_type == "Unsqueeze":
        b.call(node.output[0], onnx_unsqueeze, [b.value(node.input[0]), list(axes)])
    else:
        b.call(node.output[0], onnx_squeeze, [b.value(node.input[0]), None if axes is None else list(axes)])


@_op("Cast")
def _cast(b: _Builder, node: Any, attrs: dict[str, Any]) -> None:
    if node.input[0] in b.dims:  # dimensions are ints whatever integer type ONNX names
        b.values[node.output[0]] = b.value(node.input[0])
        b.dims.add(node.output[0])
        return
    from onnx import helper

    dtype = torch.from_numpy(np.zeros(0, dtype=helper.tensor_dtype_to_np_dtype(int(attrs["to"])))).dtype
    b.call(node.output[0], torch.Tensor.to, [b.value(node.input[0]), dtype])


SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(_CONVERTERS))
