"""Which parameter slices of a layer hold (or read) a group's channels: what pruners rank and mask."""

from __future__ import annotations

import torch
from torch import nn

from nncompress.graph.records import ChannelSlice
from nncompress.graph.trace import RECURRENT_TYPES
from nncompress.layers import is_conv1d, is_rms_norm
from nncompress.norms import FROZEN_BN_BUFFERS, is_frozen_batch_norm

__all__ = ["NORM_TYPES", "layer_slices"]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)

Slices = tuple[list[ChannelSlice], list[ChannelSlice], bool]


def layer_slices(
    module: nn.Module, name: str, is_out: bool, idxs: tuple[int, ...], chans: tuple[int, ...]
) -> Slices:
    """Maps one layer side of a group to (member slices, consumer slices, whether it is a root)."""

    def s(param: str, dim: int) -> ChannelSlice:
        return ChannelSlice(name, param, dim, idxs, chans)

    has_bias = getattr(module, "bias", None) is not None and isinstance(module.bias, torch.Tensor)
    bias = [s("bias", 0)] if has_bias else []
    if isinstance(module, nn.modules.conv._ConvNd):
        transposed = bool(module.transposed)
        if module.groups == module.out_channels and module.out_channels > 1:  # depthwise
            return [s("weight", 0), *bias], [], False
        if is_out:
            return [s("weight", 1 if transposed else 0), *bias], [], True
        return [], [s("weight", 0 if transposed else 1)], False
    if isinstance(module, nn.Linear):
        return ([s("weight", 0), *bias], [], True) if is_out else ([], [s("weight", 1)], False)
    if isinstance(module, nn.Embedding):
        return [s("weight", 1)], [], True
    if is_conv1d(module):  # weight is (in, out)
        return ([s("weight", 1), *bias], [], True) if is_out else ([], [s("weight", 0)], False)
    if isinstance(module, nn.MultiheadAttention):
        return _attention_slices(module, name, idxs, chans)
    if isinstance(module, NORM_TYPES):
        affine = getattr(module, "affine", False) and module.weight is not None
        return ([s("weight", 0), s("bias", 0)] if affine else []), [], False
    if isinstance(module, nn.LayerNorm):
        out = [s(p, t.dim() - 1) for p in ("weight", "bias") if (t := getattr(module, p)) is not None]
        return out, [], False
    if is_rms_norm(module):
        return [s("weight", 0)], [], False
    if is_frozen_batch_norm(module):  # its affine and statistics are buffers
        return [s(b, 0) for b in FROZEN_BN_BUFFERS[:2]], [], False
    if isinstance(module, nn.PReLU):
        return ([s("weight", 0)] if module.num_parameters > 1 else []), [], False
    if isinstance(module, RECURRENT_TYPES) and not is_out:
        params = ["weight_ih_l0", *(["weight_ih_l0_reverse"] if module.bidirectional else [])]
        return [], [s(p, 1) for p in params], False
    return [], [], False


def _attention_slices(
    module: nn.MultiheadAttention, name: str, idxs: tuple[int, ...], chans: tuple[int, ...]
) -> Slices:
    # Torch-Pruning removes an embedding channel from the query, key and value projections, the
    # input columns and the out projection at once (see MultiheadAttentionPruner).
    e = module.embed_dim
    qkv = tuple(i + k * e for k in range(3) for i in idxs)
    members: list[ChannelSlice] = []
    consumers: list[ChannelSlice] = []
    if module.in_proj_weight is not None:
        members.append(ChannelSlice(name, "in_proj_weight", 0, qkv, chans * 3))
        consumers.append(ChannelSlice(name, "in_proj_weight", 1, idxs, chans))
    else:
        for p in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            members.append(ChannelSlice(name, p, 0, idxs, chans))
    if module.in_proj_bias is not None:
        members.append(ChannelSlice(name, "in_proj_bias", 0, qkv, chans * 3))
    out = f"{name}.out_proj"
    members.append(ChannelSlice(out, "weight", 0, idxs, chans))
    if module.out_proj.bias is not None:
        members.append(ChannelSlice(out, "bias", 0, idxs, chans))
    consumers.append(ChannelSlice(out, "weight", 1, idxs, chans))
    return members, consumers, True
