"""The fp32 ONNX graph that onnxruntime quantizes, and which module each of its nodes came from.

Exporter choice, measured on torch 2.13 CPU here: the TorchScript exporter (``dynamo=False``) wrote
ResNet-18 CIFAR in 0.06 s with BatchNorm already folded into the convolutions, and names every node
after its module path (``/layers/layers.0/layers.0.0/conv1/Conv``), so a config's layer names map to
nodes by name. The ``torch.export`` exporter took 4.7 s (ResNet-18) and 19 s (the LSTM classifier)
and, when its optimizer folds BatchNorm, names the fused Conv after the BatchNorm. It stays the
fallback for models the TorchScript exporter refuses, with ``optimize=False`` (no folding; onnxruntime's
pre-processing folds later and keeps the Conv's name) and nodes mapped by their ``name_scopes`` metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from nncompress.errors import NncompressError
from nncompress.io.onnx_export import (
    DYNAMO_OPSET,
    LEGACY_OPSET,
    export_dynamo,
    export_legacy,
    first_line,
    quiet_exporters,
    torch_name_scopes,
)

__all__ = [
    "ExportedGraph",
    "QuantizationExportError",
    "export_for_quantization",
    "gemm_to_matmul",
    "preprocess",
]


class QuantizationExportError(NncompressError):
    """The model could not be exported to ONNX for quantization."""

    code = "quantization_export_failed"


@dataclass(frozen=True)
class ExportedGraph:
    """An fp32 ONNX file prepared for quantization.

    Attributes:
        path: the ``.onnx`` file.
        input_names: the graph's inputs, in the order of the model's ``forward`` arguments.
        node_modules: ONNX node name -> module name, for nodes that belong to a named module.
        exporter: which exporter wrote it.
    """

    path: Path
    input_names: tuple[str, ...]
    node_modules: dict[str, str]
    exporter: str


def export_for_quantization(
    model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], path: str | Path
) -> ExportedGraph:
    """Exports ``model`` (eval mode, dynamic batch) and maps ONNX nodes back to module names.

    Args:
        model: the float model.
        example_inputs: one input tensor or a sequence of them, batch dimension first.
        path: where to write the ``.onnx`` file.

    Returns:
        The exported graph with its node -> module map.

    Raises:
        QuantizationExportError: neither exporter could write the model.
    """
    out = Path(path)
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    modules = {n for n, _ in model.named_modules() if n}
    was_training = model.training
    model.eval()
    try:
        try:
            export_legacy(model, inputs, out)
            exporter = f"torchscript, opset {LEGACY_OPSET}"
            graph = onnx.load(str(out)).graph
            mapping = {n.name: m for n in graph.node if (m := _module_from_scope_name(n.name, modules))}
        except Exception as legacy_exc:
            try:
                export_dynamo(model, inputs, out, optimize=False)
            except Exception as dynamo_exc:
                raise QuantizationExportError(
                    "ONNX export for quantization failed: the TorchScript exporter said "
                    f"{first_line(legacy_exc)}; "
                    f"torch.export said {first_line(dynamo_exc)}",
                    path=str(out),
                ) from dynamo_exc
            exporter = f"torch.export (dynamo, unoptimized), opset {DYNAMO_OPSET}"
            graph = onnx.load(str(out)).graph
            mapping = {n.name: m for n in graph.node if (m := _module_from_metadata(n, modules))}
    finally:
        model.train(was_training)
    initializers = {i.name for i in graph.initializer}
    names = tuple(i.name for i in graph.input if i.name not in initializers)
    return ExportedGraph(path=out, input_names=names, node_modules=mapping, exporter=exporter)


def preprocess(src: Path, dst: Path) -> Path:
    """onnxruntime's recommended pre-quantization pass: shape inference and basic graph optimization.

    Folds BatchNorm into Conv (when the exporter did not) and constant subgraphs; node names survive.
    Symbolic shape inference is skipped when it fails (it does on some recurrent graphs); ONNX's own
    shape inference still runs.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with quiet_exporters():
        try:
            quant_pre_process(str(src), str(dst))
        except Exception:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def gemm_to_matmul(path: Path) -> list[str]:
    """Rewrites each ``Gemm`` with a constant weight into ``MatMul`` + ``Add``, in place.

    onnxruntime's dynamic quantizer has integer kernels for MatMul, not Gemm, and the TorchScript
    exporter writes ``nn.Linear`` on 2-D inputs as Gemm; without this, dynamic mode would leave every
    such Linear in float. The MatMul keeps the Gemm's node name so the node -> module map still holds.

    Returns:
        The names of the rewritten nodes.
    """
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    rewritten: list[str] = []
    new_nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (
            attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        )
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T.copy()
        weight_name = f"{node.input[1]}_matmul"
        graph.initializer.append(numpy_helper.from_array(weight, weight_name))
        has_bias = len(node.input) > 2 and node.input[2] != ""
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [product], name=node.name))
        if has_bias:
            new_nodes.append(
                helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias")
            )
        rewritten.append(node.name)
    if rewritten:
        del graph.node[:]
        graph.node.extend(new_nodes)
        used = {name for n in graph.node for name in n.input}
        kept = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        onnx.save(model, str(path))
    return rewritten


def _module_from_scope_name(node_name: str, modules: set[str]) -> str | None:
    """``/layers/layers.1/layers.1.0/shortcut/shortcut.0/Conv`` -> ``layers.1.0.shortcut.0``.

    The TorchScript exporter names each scope by its attribute name (``conv1``), and a container's
    child by the container's scope name plus the index (``shortcut.0``); the walk undoes both.
    """
    if not node_name.startswith("/"):
        return None
    prefix, parent = "", ""
    for scope in node_name.split("/")[1:-1]:
        relative = scope[len(parent) + 1 :] if parent and scope.startswith(parent + ".") else scope
        candidates = [f"{prefix}.{relative}", f"{prefix}.{scope}"] if prefix else [relative, scope]
        found = next((c for c in candidates if c in modules), None)
        if found is None:
            break
        prefix, parent = found, scope
    return prefix or None


def _module_from_metadata(node: onnx.NodeProto, modules: set[str]) -> str | None:
    for scope in reversed(torch_name_scopes(node) or []):
        if scope in modules:
            return str(scope)
    return None
