"""ONNX → ``torch.fx.GraphModule``, so an ONNX upload can be pruned like any other model.

Why our own converter: onnx2torch (the usual choice) imports torchvision, and the only torchvision
wheel available at the time failed to load next to the CPU build of torch. A small, explicit op table
also means any op we do not know is refused by name, before anything runs.

Layers with weights become real modules (``nn.Conv2d``, ``nn.Linear``, ``nn.LayerNorm``,
``nn.Embedding`` …) at their PyTorch module paths (``layer1.0.conv1``, ``encoder.layer.0.intermediate
.dense``), recovered from initializer names or the exporters' scope names (see :mod:`naming`), so
config_lists written for the original PyTorch model select the same layers. Every import is checked
against onnxruntime on a generated input.

Public: :func:`load_onnx`, :func:`inspect_onnx`, :func:`example_inputs`, :class:`OnnxSummary`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import fx

from nncompress.errors import ModelLoadError
from nncompress.io.onnx_import import (  # noqa: F401 - importing them registers converters
    layers,
    ops,
    ops_norm_deconv,
    ops_tensor,
)
from nncompress.io.onnx_import.builder import GraphBuilder
from nncompress.io.onnx_import.check import compare_with_onnxruntime
from nncompress.io.onnx_import.proto import read_model
from nncompress.io.onnx_import.registry import CONVERTERS
from nncompress.io.onnx_import.summary import (
    LayerInfo,
    OnnxSummary,
    TensorSpec,
    analyse,
    example_inputs,
    inspect_onnx,
    torch_dtype,
)

__all__ = [
    "SUPPORTED_OPS",
    "LayerInfo",
    "OnnxSummary",
    "TensorSpec",
    "example_inputs",
    "inspect_onnx",
    "load_onnx",
]

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(CONVERTERS))


def load_onnx(
    path: str | Path, *, external_data_dir: str | Path | None = None, check: bool = True
) -> fx.GraphModule:
    """Converts an ONNX file into a ``GraphModule`` that computes the same function.

    Args:
        path: the ``.onnx`` file.
        external_data_dir: the directory holding the file's external data, when it has any. Each
            tensor's location must be a plain file name inside it (no ``..``, absolute path,
            subdirectory or symlink). Without it, external data is refused.
        check: run the converted module and onnxruntime on a generated input and refuse the model
            when an output differs (relative error above 1e-4).

    Returns:
        The converted model in eval mode. ``gm.meta["onnx"]`` holds the summary (``to_dict()`` form),
        the check's errors and the conversion time; each placeholder's ``meta["onnx_dtype"]`` its dtype.

    Raises:
        ModelLoadError: unreadable file, refused external data, unsupported ops (all named, with a
            hint each), a node that cannot be converted, or a mismatch with onnxruntime.
    """
    import onnx

    started = time.perf_counter()
    proto = read_model(path, external_data_dir)
    analysis = analyse(proto)
    summary = analysis.summary
    if summary.unsupported_ops:
        listed = "; ".join(f"{op}: {summary.hints[op]}" for op in summary.unsupported_ops)
        raise ModelLoadError(
            f"the ONNX graph uses ops this converter does not support: {', '.join(summary.unsupported_ops)} "
            f"({listed})",
            ops=list(summary.unsupported_ops),
            hints=summary.hints,
        )
    graph = analysis.proto.graph
    initializers = {t.name: _tensor(t) for t in graph.initializer}
    ranks = {name: len(dims) for name, dims in analysis.facts.shapes.items()}
    builder = GraphBuilder(initializers, ranks, analysis.plans)
    builder.elem_types = analysis.facts.elem_types
    builder.shapes = analysis.facts.shapes
    builder.static_batch = _static_batch(graph, initializers, analysis.facts.shapes)
    for value in graph.input:
        if value.name not in initializers:
            builder.add_input(value.name, torch_dtype(value.type.tensor_type.elem_type))
    for node in graph.node:
        if node.output and node.output[0] in builder.fused:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        try:
            if not _fold(builder, node, analysis.facts.opset):
                CONVERTERS[_op_name(node)](builder, node, attrs)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"cannot convert ONNX node {node.name or node.op_type!r} ({node.op_type}): {exc}",
                node=node.name,
                op=node.op_type,
            ) from exc
    gm = builder.finish([o.name for o in graph.output]).eval()
    report: dict[str, Any] = {"summary": summary.to_dict()}
    if check:
        report["check"] = compare_with_onnxruntime(gm, proto, summary)
    report["seconds"] = time.perf_counter() - started
    gm.meta["onnx"] = report
    return gm


def _static_batch(
    graph: Any, initializers: dict[str, torch.Tensor], shapes: dict[str, list[Any]]
) -> int | None:
    """The fixed batch size of a graph exported without a dynamic batch axis, else None."""
    inputs = [v.name for v in graph.input if v.name not in initializers]
    dims = shapes.get(inputs[0]) if inputs else None
    return dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None


def _fold(b: GraphBuilder, node: Any, opset: int) -> bool:
    """Evaluates a node whose inputs are all constants once, at import (onnx's reference evaluator)."""
    inputs = [i for i in node.input if i]
    if node.op_type == "Constant" or not inputs or any(b.const(i) is None for i in inputs):
        return False
    if node.domain not in ("", "ai.onnx") or node.op_type.startswith("Random"):
        return False
    from onnx.reference import ReferenceEvaluator

    feeds = {i: _numpy(b.consts[i]) for i in inputs}
    try:
        results = ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)
    except Exception:  # the converter handles constants itself where the evaluator cannot
        return False
    import numpy as np

    for name, value in zip(node.output, results, strict=False):
        if name:
            b.consts[name] = torch.from_numpy(np.array(value).copy())
    return True


def _numpy(t: torch.Tensor) -> Any:
    return t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()


def _tensor(proto_tensor: Any) -> torch.Tensor:
    import numpy as np
    from onnx import numpy_helper

    return torch.from_numpy(np.array(numpy_helper.to_array(proto_tensor)).copy())


def _op_name(node: Any) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
