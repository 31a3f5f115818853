"""What an ONNX upload holds, read without converting or running it: for checks at upload time.

:func:`inspect_onnx` parses the file (external data is never read) and reports the opset, the inputs and
outputs with their dtypes and (symbolic) shapes, the ops, which of them the converter lacks with a hint
each, and the PyTorch layer names and types the import will produce, so a config_list can be checked
against them before a job is queued. :func:`example_inputs` makes tensors that fit the inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nncompress.io.onnx_import.naming import LayerPlan, plan_layers
from nncompress.io.onnx_import.proto import GraphFacts, all_tensors, graph_facts
from nncompress.io.onnx_import.registry import CONVERTERS

__all__ = [
    "Analysis",
    "LayerInfo",
    "OnnxSummary",
    "TensorSpec",
    "analyse",
    "example_inputs",
    "inspect_onnx",
    "summarize",
    "torch_dtype",
]

# Size given to a symbolic dimension that is not the batch: a sequence length, or an image side.
DEFAULT_SEQUENCE = 16
DEFAULT_IMAGE_SIDE = 64
# Ops an integer input may pass through before it indexes an embedding table.
_PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}

_EXPORT_HINT = (
    "export with torch.onnx.export(..., opset_version=17, dynamo=False), which writes the ops it knows"
)
_NEVER = "never supported: "
_HINTS: dict[str, str] = {
    **dict.fromkeys(
        ("Loop", "If", "Scan", "SequenceConstruct", "SequenceInsert", "ConcatFromSequence"),
        _NEVER + "data-dependent control flow and sequences have no fixed graph to prune; export a traced "
        "model (torch.onnx.export(..., dynamo=False) traces one path)",
    ),
    **dict.fromkeys(
        (
            "RandomNormal",
            "RandomUniform",
            "RandomNormalLike",
            "RandomUniformLike",
            "Multinomial",
            "Bernoulli",
        ),
        _NEVER + "random ops make outputs irreproducible; export the model in eval mode",
    ),
    **dict.fromkeys(
        (
            "QuantizeLinear",
            "DequantizeLinear",
            "DynamicQuantizeLinear",
            "QLinearConv",
            "QLinearMatMul",
            "ConvInteger",
            "MatMulInteger",
        ),
        _NEVER + "this is a quantized graph; upload the float model (nncompress quantizes after pruning)",
    ),
    **dict.fromkeys(
        ("Attention", "RMSNormalization", "RotaryEmbedding"),
        "an op of a newer opset; " + _EXPORT_HINT,
    ),
}


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: dtype as torch names it, dims as ints, symbolic names, or None."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]
    int_high: int | None = None  # integer inputs: exclusive bound for generated values (embedding rows)


@dataclass(frozen=True)
class LayerInfo:
    """A layer the import will create: its PyTorch module path and torch class name."""

    name: str
    type: str


@dataclass(frozen=True)
class OnnxSummary:
    """What :func:`inspect_onnx` found; ``to_dict()`` is JSON-ready."""

    opset: int
    producer: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ops: tuple[str, ...]
    unsupported_ops: tuple[str, ...]
    hints: dict[str, str] = field(default_factory=dict)
    external_data: bool = False
    layers: tuple[LayerInfo, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON types."""
        out = asdict(self)
        for key in ("inputs", "outputs"):
            for spec in out[key]:
                spec["shape"] = list(spec["shape"])
        for key in ("ops", "unsupported_ops", "inputs", "outputs", "layers"):
            out[key] = list(out[key])
        return out


def inspect_onnx(path: str | Path) -> OnnxSummary:
    """Summarizes an ONNX file without converting or running it.

    Args:
        path: the ``.onnx`` file. External data is noted (``external_data``), never read.

    Returns:
        An :class:`OnnxSummary`.

    Raises:
        ModelLoadError: the file cannot be parsed as ONNX.
    """
    import onnx

    from nncompress.errors import ModelLoadError

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"the ONNX file cannot be parsed: {exc}", path=str(path)) from exc
    return summarize(proto)


def summarize(proto: Any) -> OnnxSummary:
    """:func:`inspect_onnx` for a parsed ``ModelProto``."""
    return analyse(proto).summary


@dataclass(frozen=True)
class Analysis:
    """The summary plus what the converter needs from the same pass over the graph."""

    summary: OnnxSummary
    proto: Any  # local functions inlined, shapes inferred
    facts: GraphFacts
    plans: dict[str, LayerPlan]


def analyse(proto: Any) -> Analysis:
    """Inlines local functions, infers shapes, plans the layers and summarizes, in one pass."""
    from onnx import external_data_helper

    proto = _inlined(proto)
    facts, inferred = graph_facts(proto)
    graph = inferred.graph
    plans = plan_layers(graph, facts.consts, facts.shapes, facts.elem_types)
    ops = sorted({_op_name(n) for n in graph.node})
    unsupported = sorted(
        {
            _op_name(n)
            for n in graph.node
            if _op_name(n) not in CONVERTERS and not all(o in facts.consts for o in n.output if o)
        }
    )
    initializers = {t.name for t in graph.initializer}
    bounds = _index_bounds(graph, facts.shapes)
    inputs = tuple(_spec(v, bounds.get(v.name)) for v in graph.input if v.name not in initializers)
    summary = OnnxSummary(
        opset=facts.opset,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        inputs=inputs,
        outputs=tuple(_spec(v, None) for v in graph.output),
        ops=tuple(ops),
        unsupported_ops=tuple(unsupported),
        hints={op: _hint(op) for op in unsupported},
        external_data=any(external_data_helper.uses_external_data(t) for t in all_tensors(graph)),
        layers=tuple(LayerInfo(p.path, p.kind) for p in plans.values()),
    )
    return Analysis(summary, inferred, facts, plans)


def example_inputs(summary: OnnxSummary, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random tensors that fit ``summary.inputs``: the batch for a symbolic first dim, defaults for others.

    Integer inputs (token ids) get small non-negative values, below the row count of the embedding
    table they index when the graph shows one, else 0 or 1 (masks, token types).
    """
    generator = torch.Generator().manual_seed(seed)
    tensors: list[torch.Tensor] = []
    for spec in summary.inputs:
        rank = len(spec.shape)
        shape = [
            d
            if isinstance(d, int) and d > 0
            else batch
            if i == 0
            else DEFAULT_IMAGE_SIDE
            if rank == 4 and i >= 2
            else DEFAULT_SEQUENCE
            for i, d in enumerate(spec.shape)
        ]
        dtype = getattr(torch, spec.dtype)
        if dtype == torch.bool:
            tensors.append(torch.randint(0, 2, shape, generator=generator).bool())
        elif dtype.is_floating_point:
            tensors.append(torch.randn(shape, generator=generator).to(dtype))
        else:
            high = min(spec.int_high or 2, 1000)
            tensors.append(torch.randint(0, high, shape, generator=generator, dtype=dtype))
    return tuple(tensors)


def torch_dtype(elem_type: int) -> torch.dtype:
    """The torch dtype of an ONNX element type (float32 when unknown)."""
    import numpy as np
    from onnx import helper

    try:
        return torch.from_numpy(np.zeros(0, dtype=helper.tensor_dtype_to_np_dtype(elem_type))).dtype
    except (KeyError, TypeError, ValueError):
        return torch.float32


def _spec(value: Any, int_high: int | None) -> TensorSpec:
    tensor_type = value.type.tensor_type
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim
    )
    dtype = str(torch_dtype(tensor_type.elem_type)).removeprefix("torch.")
    return TensorSpec(value.name, dtype, dims, int_high if not dtype.startswith("float") else None)


def _index_bounds(graph: Any, shapes: dict[str, list[Any]]) -> dict[str, int]:
    """Graph input → the row count of the smallest constant table it indexes (via Gather axis 0)."""
    producers_of: dict[str, list[str]] = {}  # value → graph inputs it passes through unchanged
    for value in graph.input:
        producers_of[value.name] = [value.name]
    bounds: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in _PASS_THROUGH and node.input and node.input[0] in producers_of:
            producers_of[node.output[0]] = producers_of[node.input[0]]
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in producers_of:
            table = shapes.get(node.input[0]) or []
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if axis == 0 and table and isinstance(table[0], int):
                for source in producers_of[node.input[1]]:
                    bounds[source] = min(bounds.get(source, table[0]), table[0])
    return bounds


def _op_name(node: Any) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _hint(op: str) -> str:
    if op in _HINTS:
        return _HINTS[op]
    if "." in op:
        return (
            f"{op} is a custom-domain op (e.g. from onnxruntime's graph optimizer); upload the graph as "
            "torch.onnx.export writes it, before any onnxruntime optimization"
        )
    return "not supported yet; " + _EXPORT_HINT + ", or report the op"


def _inlined(proto: Any) -> Any:
    """Model-local functions (the dynamo exporter may keep some) inlined into the main graph."""
    if not proto.functions:
        return proto
    from onnx import inliner

    return inliner.inline_local_functions(proto)
