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

from pathlib import Path
from typing import Any

import torch
from torch import fx

from nncompress.errors import ModelLoadError
from nncompress.io.onnx_import import layers, ops  # noqa: F401 - importing them registers their converters
from nncompress.io.onnx_import.builder import GraphBuilder
from nncompress.io.onnx_import.registry import CONVERTERS

__all__ = ["SUPPORTED_OPS", "load_onnx"]

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(CONVERTERS))


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
    unsupported = sorted({n.op_type for n in proto.graph.node if n.op_type not in CONVERTERS})
    if unsupported:
        raise ModelLoadError(
            f"the ONNX graph uses ops this converter does not support: {', '.join(unsupported)} "
            f"(supported: {', '.join(sorted(CONVERTERS))})",
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
    builder = GraphBuilder(initializers, ranks)
    for value in proto.graph.input:
        if value.name not in initializers:
            builder.add_input(value.name)
    for node in proto.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        try:
            CONVERTERS[node.op_type](builder, node, attrs)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"cannot convert ONNX node {node.name or node.op_type!r} ({node.op_type}): {exc}",
                node=node.name,
                op=node.op_type,
            ) from exc
    return builder.finish([o.name for o in proto.graph.output]).eval()


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
