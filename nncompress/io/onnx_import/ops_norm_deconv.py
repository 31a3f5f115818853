"""Converters for transposed convolutions, instance/group normalisation and GatherND.

Decoders of segmentation models (U-Net style) upsample with ``ConvTranspose``; the TorchScript exporter
writes ``nn.GroupNorm`` as ``InstanceNormalization`` on a reshaped tensor (opset < 18) and the newer
exporters as ``GroupNormalization``; ``GatherND`` appears in detection and some transformer heads.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.errors import ModelLoadError
from nncompress.io.onnx_import.builder import GraphBuilder
from nncompress.io.onnx_import.registry import converts, optional_const, required_const, symmetric_pads

__all__ = ["onnx_gather_nd", "onnx_group_norm"]


@converts("ConvTranspose")
def _conv_transpose(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    weight = required_const(b, node, 1, "the weight")
    bias = optional_const(b, node, 2)
    dims = weight.dim() - 2
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or "output_shape" in attrs:
        raise ModelLoadError(
            f"ConvTranspose {node.name!r}: auto_pad/output_shape are not supported; export with explicit "
            "padding (torch.onnx.export writes pads and output_padding)",
            node=node.name,
        )
    groups = int(attrs.get("group", 1))
    cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}.get(dims)
    if cls is None:
        raise ModelLoadError(f"ConvTranspose {node.name!r}: {dims}-d kernels", node=node.name)
    # ONNX ConvTranspose weights are [C_in, C_out / groups, k...], as torch stores them.
    geometry: dict[str, Any] = {
        "kernel_size": tuple(weight.shape[2:]),
        "stride": tuple(attrs.get("strides", [1] * dims)),
        "padding": symmetric_pads(node, attrs.get("pads", [0] * 2 * dims), dims),
        "output_padding": tuple(attrs.get("output_padding", [0] * dims)),
        "dilation": tuple(attrs.get("dilations", [1] * dims)),
    }
    layer = cls(weight.shape[0], weight.shape[1] * groups, groups=groups, bias=bias is not None, **geometry)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None and layer.bias is not None:
            layer.bias.copy_(bias)
    b.call_module(node.output[0], b.add_layer(node, layer), [b.value(node.input[0])])


@converts("InstanceNormalization")
def _instance_norm(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    eps = float(attrs.get("epsilon", 1e-5))
    scale, shift = b.value(node.input[1]), b.value(node.input[2])
    b.call(
        node.output[0],
        F.instance_norm,
        [b.value(node.input[0])],
        {"weight": scale, "bias": shift, "eps": eps},
    )


@converts("GroupNormalization")
def _group_norm(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    if "num_groups" not in attrs:
        raise ModelLoadError(f"GroupNormalization {node.name!r} has no num_groups", node=node.name)
    args = [b.value(node.input[0]), int(attrs["num_groups"]), b.value(node.input[1]), b.value(node.input[2])]
    b.call(node.output[0], onnx_group_norm, [*args, float(attrs.get("epsilon", 1e-5))])


def onnx_group_norm(
    x: torch.Tensor, num_groups: int, scale: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """ONNX GroupNormalization; opset 18 gives scale/bias per group, opset 21 per channel."""
    channels = x.shape[1]
    if scale.numel() == num_groups and num_groups != channels:
        scale = scale.repeat_interleave(channels // num_groups)
        bias = bias.repeat_interleave(channels // num_groups)
    return F.group_norm(x, num_groups, scale, bias, eps)


@converts("GatherND")
def _gather_nd(b: GraphBuilder, node: Any, attrs: dict[str, Any]) -> None:
    args = [b.value(node.input[0]), b.value(node.input[1]), int(attrs.get("batch_dims", 0))]
    b.call(node.output[0], onnx_gather_nd, args)


def onnx_gather_nd(data: torch.Tensor, indices: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """ONNX GatherND: the last axis of ``indices`` indexes the dims of ``data`` after ``batch_dims``."""
    indices = indices.long()
    depth = indices.shape[-1]
    batch_shape = data.shape[:batch_dims]
    flat_batch = int(torch.tensor(batch_shape).prod()) if batch_dims else 1
    data_flat = data.reshape(flat_batch, *data.shape[batch_dims:])
    idx = indices.reshape(flat_batch, -1, depth)
    # Negative indices count from the end of their axis, as in ONNX.
    sizes = torch.tensor(data.shape[batch_dims : batch_dims + depth], device=idx.device)
    idx = torch.where(idx < 0, idx + sizes, idx)
    rows = torch.arange(flat_batch, device=idx.device).unsqueeze(1).expand(flat_batch, idx.shape[1])
    picked = data_flat[(rows, *idx.unbind(-1))]
    return picked.reshape(*indices.shape[:-1], *data.shape[batch_dims + depth :])
