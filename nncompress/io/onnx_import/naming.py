"""Which ONNX nodes become layers, of which type, and under which PyTorch module path.

The plan is computed from the graph alone (no tensors are read), so :func:`inspect_onnx` can list the
layers a config_list may name without converting anything, and the converter builds exactly these.

Exporters keep the module path in different places, tried in this order:

1. the weight initializer, when it is named ``<path>.weight`` and used by this node only (both
   exporters keep parameter names; the dynamo exporter also shares one initializer between layers
   whose weights are equal, e.g. all-zero biases, so a shared name says nothing about this layer);
2. the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata (``['', 'encoder', ..., 'linear']``:
   the last entry is the aten op, the one before it the module);
3. the TorchScript exporter's node name (``/layer1/layer1.0/conv1/Conv``: a scope per module call,
   where a container's child repeats its parent's name, ``layer1`` then ``layer1.0``);
4. the bias initializer named ``<path>.bias`` (the TorchScript exporter folds BatchNorm into the
   conv and names the folded weight ``onnx::Conv_123``, but a MatMul's bias keeps its name);
5. a ``<path>.weight`` / ``<path>.bias`` initializer shared by several layers, for the first of them
   only: the dynamo exporter names a shared initializer after the first parameter holding that value.
   Its graph optimizer drops the name scopes of the MatMuls it rewrites (timm's ViT), so this is what
   is left there; ``torch.onnx.export(..., dynamo=True, optimize=False)`` keeps the scopes;
6. the node name, made an identifier.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from nncompress.io.onnx_export import torch_name_scopes

__all__ = ["LayerPlan", "plan_layers"]

_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_FLOATS = {1, 10, 11, 16}  # ONNX FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass(frozen=True)
class LayerPlan:
    """One ONNX node (or MatMul + Add pair) that becomes a torch layer."""

    path: str
    kind: str  # the torch class name: "Conv2d", "Linear", "LayerNorm", ...
    op: str
    weight: str
    bias: str | None = None  # the Add input fused into a MatMul's nn.Linear
    fused_output: str | None = None  # the fused Add's output, produced by the layer instead


def plan_layers(
    graph: Any,
    consts: set[str],
    shapes: dict[str, list[Any]],
    elem_types: dict[str, int],
) -> dict[str, LayerPlan]:
    """Plans the layers of ``graph``, keyed by the first output of the node that becomes each one.

    Args:
        graph: the ONNX ``GraphProto``.
        consts: names of values known before the model runs (initializers, Constant outputs and
            values computed from them only).
        shapes: value name → dims (ints, strings for symbolic dims, None when unknown).
        elem_types: value name → ONNX element type, where known.
    """
    uses: Counter[str] = Counter(i for n in graph.node for i in n.input if i)
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    plans: dict[str, LayerPlan] = {}
    taken: set[str] = set()
    for node in graph.node:
        found = _layer_kind(node, consts, shapes, elem_types)
        if found is None:
            continue
        kind, weight = found
        bias: str | None = None
        fused: str | None = None
        if node.op_type == "MatMul":
            bias, fused = _fusable_bias(node, consumers, outputs, consts, shapes)
        path = _unique(_module_path(node, weight, bias, uses, taken), taken)
        plans[node.output[0]] = LayerPlan(path, kind, node.op_type, weight, bias, fused)
    return plans


def _layer_kind(
    node: Any, consts: set[str], shapes: dict[str, list[Any]], elem_types: dict[str, int]
) -> tuple[str, str] | None:
    op, inputs = node.op_type, list(node.input)
    weight = inputs[1] if len(inputs) > 1 else ""
    weighted = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "LayerNormalization")
    if op in weighted and weight not in consts:
        return None
    rank = len(shapes.get(weight) or [])
    if op == "Conv":
        return ({3: "Conv1d", 4: "Conv2d", 5: "Conv3d"}.get(rank, "Conv2d"), weight)
    if op == "ConvTranspose":
        return ({3: "ConvTranspose1d", 5: "ConvTranspose3d"}.get(rank, "ConvTranspose2d"), weight)
    if op == "Gemm":
        transposed_a = any(a.name == "transA" and a.i for a in node.attribute)
        return None if transposed_a else ("Linear", weight)
    if op == "MatMul":
        return ("Linear", weight) if rank == 2 else None
    if op == "BatchNormalization":
        data_rank = len(shapes.get(inputs[0]) or [None] * 4)
        return ({2: "BatchNorm1d", 3: "BatchNorm1d", 5: "BatchNorm3d"}.get(data_rank, "BatchNorm2d"), weight)
    if op == "LayerNormalization":
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        data_rank = len(shapes.get(inputs[0]) or [])
        last_axis = axis == -1 or (data_rank > 0 and axis == data_rank - 1)
        return ("LayerNorm", weight) if last_axis and rank == 1 else None
    if op == "Gather" and inputs and inputs[0] in consts:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        table_rank = len(shapes.get(inputs[0]) or [])
        is_float = elem_types.get(inputs[0]) in _FLOATS
        if axis == 0 and table_rank == 2 and is_float and len(inputs) > 1 and inputs[1] not in consts:
            return ("Embedding", inputs[0])
    return None


def _fusable_bias(
    node: Any,
    consumers: dict[str, list[Any]],
    outputs: set[str],
    consts: set[str],
    shapes: dict[str, list[Any]],
) -> tuple[str | None, str | None]:
    """The Add right after a MatMul that adds a per-output bias: how nn.Linear is exported."""
    out = node.output[0]
    users = consumers.get(out, [])
    if out in outputs or len(users) != 1 or users[0].op_type != "Add":
        return None, None
    add = users[0]
    other = add.input[1] if add.input[0] == out else add.input[0]
    weight_shape = shapes.get(node.input[1]) or []
    bias_shape = shapes.get(other) or []
    if other not in consts or len(bias_shape) != 1 or not weight_shape or bias_shape != weight_shape[-1:]:
        return None, None
    return other, add.output[0]


def _module_path(node: Any, weight: str, bias: str | None, uses: Counter[str], taken: set[str]) -> str:
    for candidate in (
        _from_param(weight, ".weight", uses),
        _from_name_scopes(node),
        _from_scoped_name(node.name),
        _from_param(bias, ".bias", uses),
    ):
        if candidate:
            return candidate
    for shared in (_from_param(weight, ".weight", None), _from_param(bias, ".bias", None)):
        if shared and shared not in taken:
            return shared
    text = re.sub(r"\W", "_", node.name or node.op_type.lower()).strip("_") or "layer"
    return f"layer_{text}" if text[0].isdigit() else text


def _valid(path: str) -> bool:
    return bool(path) and all(_PART.match(part) for part in path.split("."))


def _from_param(name: str | None, suffix: str, uses: Counter[str] | None) -> str | None:
    """``<path><suffix>`` → path, when the initializer is this node's alone (``uses`` None: shared too)."""
    if not name or not name.endswith(suffix) or (uses is not None and uses[name] != 1):
        return None
    path = name[: -len(suffix)]
    return path if _valid(path) else None


def _from_name_scopes(node: Any) -> str | None:
    scopes = torch_name_scopes(node)
    if scopes is not None and len(scopes) >= 2 and isinstance(scopes[-2], str):
        return scopes[-2] if _valid(scopes[-2]) else None
    return None


def _from_scoped_name(name: str) -> str | None:
    if not name.startswith("/"):
        return None
    segments = [s for s in name.split("/")[1:-1] if s]
    parts: list[str] = []
    for segment in segments:
        # A container's child is scoped as "<container>.<index>" right under "<container>".
        if parts and segment.startswith(parts[-1] + "."):
            parts[-1] = segment
        else:
            parts.append(segment)
    path = ".".join(parts)
    return path if _valid(path) else None


def _unique(path: str, taken: set[str]) -> str:
    candidate, index = path, 1
    # A layer cannot also be the parent of another layer (nor its child): its module would gain children.
    while candidate in taken or any(
        t.startswith(candidate + ".") or candidate.startswith(t + ".") for t in taken
    ):
        candidate = f"{path}_{index}"
        index += 1
    taken.add(candidate)
    return candidate
