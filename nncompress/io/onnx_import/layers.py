"""Converters for ONNX ops with weights: each becomes a real torch layer named after its weight.

``conv1.weight`` becomes module ``conv1`` (an ``nn.Conv2d``), so a config_list written for the original
PyTorch model selects the same layers, and the pruners see the layer types they know.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nncompress.errors import ModelLoadError
from nncompress.io.onnx_import.builder import GraphBuilder
from nncompress.io.onnx_import.registry import converts, optional_const, required_const, symmetric_pads

__all__: list[str] = []


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
    path = b.add_module(node.input[1], node.name or "conv", conv)
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
    path = b.add_module(node.input[1], node.name or "linear", linear)
    b.call_module(node.output[0], path, [b.value(node.input[0])])


@converts("MatMul")
def _matmul(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    weight = b.const(node.input[1])
    if weight is not None and weight.dim() == 2:
        linear = nn.Linear(weight.shape[0], weight.shape[1], bias=False)
        with torch.no_grad():
            linear.weight.copy_(weight.t())
        path = b.add_module(node.input[1], node.name or "matmul", linear)
        b.call_module(node.output[0], path, [b.value(node.input[0])])
        return
    b.call(node.output[0], torch.matmul, [b.value(node.input[0]), b.value(node.input[1])])


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
    path = b.add_module(node.input[1], node.name or "bn", bn)
    b.call_module(node.output[0], path, [b.value(node.input[0])])
