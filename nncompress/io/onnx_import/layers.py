"""Converters for ONNX ops with weights: each becomes a real torch layer at its PyTorch module path.

The path comes from :mod:`naming` (``layer1.0.conv1`` becomes an ``nn.Conv2d`` there), so a config_list
written for the original PyTorch model selects the same layers, and the pruners see the types they know.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nncompress.errors import ModelLoadError
from nncompress.io.onnx_import.builder import GraphBuilder
from nncompress.io.onnx_import.registry import converts, optional_const, required_const, symmetric_pads
from nncompress.io.onnx_import.runtime_tensor import onnx_layer_norm

__all__ = ["embedding"]


@converts("Conv")
def _conv(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    weight = required_const(b, node, 1, "the weight")
    bias = optional_const(b, node, 2)
    dims = weight.dim() - 2
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ModelLoadError(f"Conv {node.name!r}: auto_pad is not supported", node=node.name)
    groups = int(attrs.get("group", 1))
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    geometry: dict[str, Any] = {
        "kernel_size": tuple(weight.shape[2:]),
        "stride": tuple(attrs.get("strides", [1] * dims)),
        "padding": symmetric_pads(node, attrs.get("pads", [0] * 2 * dims), dims),
        "dilation": tuple(attrs.get("dilations", [1] * dims)),
    }
    conv = cls(weight.shape[1] * groups, weight.shape[0], groups=groups, bias=bias is not None, **geometry)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None and conv.bias is not None:
            conv.bias.copy_(bias)
    path = b.add_layer(node, conv)
    b.call_module(node.output[0], path, [b.value(node.input[0])])


@converts("Gemm")
def _gemm(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    if attrs.get("transA", 0):
        raise ModelLoadError(f"Gemm {node.name!r}: transA=1 is not supported", node=node.name)
    weight = required_const(b, node, 1, "B")
    bias = optional_const(b, node, 2)
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
    path = b.add_layer(node, linear)
    b.call_module(node.output[0], path, [b.value(node.input[0])])


@converts("MatMul")
def _matmul(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    plan = b.plan(node)
    weight = b.const(node.input[1])
    if plan is None or weight is None or weight.dim() != 2:
        b.call(node.output[0], torch.matmul, [b.tensor(node.input[0]), b.tensor(node.input[1])])
        return
    # MatMul by a constant, plus the Add of a constant vector right after it, is how exporters write
    # nn.Linear; one layer keeps the PyTorch module (and lets pruning shrink both together).
    bias = b.const(plan.bias) if plan.bias else None
    linear = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight.t())
        if bias is not None and linear.bias is not None:
            linear.bias.copy_(bias)
    path = b.add_layer(node, linear)
    b.call_module(node.output[0], path, [b.value(node.input[0])])
    if bias is not None and plan.fused_output:
        b.values[plan.fused_output] = b.values[node.output[0]]
        b.fused.add(plan.fused_output)


@converts("LayerNormalization")
def _layer_norm(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    if any(node.output[1:]):
        raise ModelLoadError(
            f"LayerNormalization {node.name!r}: the Mean/InvStdDev outputs are not supported", node=node.name
        )
    eps, axis = float(attrs.get("epsilon", 1e-5)), int(attrs.get("axis", -1))
    scale, shift = b.const(node.input[1]), optional_const(b, node, 2)
    if b.plan(node) is None or scale is None:
        bias = b.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        args = [b.value(node.input[0]), axis, b.value(node.input[1]), bias, eps]
        b.call(node.output[0], onnx_layer_norm, args)
        return
    norm = nn.LayerNorm(scale.numel(), eps=eps, bias=shift is not None)
    with torch.no_grad():
        norm.weight.copy_(scale.reshape(-1))
        if shift is not None and norm.bias is not None:
            norm.bias.copy_(shift.reshape(-1).expand(scale.numel()))
    b.call_module(node.output[0], b.add_layer(node, norm), [b.value(node.input[0])])


def embedding(b: GraphBuilder, node: Any) -> bool:
    """Gather from a constant 2-D float table by computed indices becomes an nn.Embedding."""
    plan = b.plan(node)
    table = b.const(node.input[0])
    if plan is None or plan.kind != "Embedding" or table is None:
        return False
    layer = nn.Embedding.from_pretrained(table.clone(), freeze=False)
    ids = b.graph.call_function(torch.Tensor.long, (b.tensor(node.input[1]),))
    b.call_module(node.output[0], b.add_layer(node, layer), [ids])
    return True


@converts("BatchNormalization")
def _batchnorm(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    scale, shift = required_const(b, node, 1, "scale"), required_const(b, node, 2, "B")
    mean, var = required_const(b, node, 3, "mean"), required_const(b, node, 4, "var")
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
        # Buffers typed Optional by torch; a BatchNorm built with track_running_stats has both.
        assert bn.running_mean is not None and bn.running_var is not None
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    path = b.add_layer(node, bn)
    b.call_module(node.output[0], path, [b.value(node.input[0])])
