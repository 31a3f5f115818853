"""Deciding a removal from a masked model, and recording / replaying it as kept indices.

A channel of a group is removed when every layer producing it is provably zero there after masking; the
removal is recorded per layer side as the original indices that stay (``kept``), which a fresh instance of
the architecture can replay (:func:`removal_from_kept`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from nncompress.graph import ChannelGroup
from nncompress.graph.prune import removed_positions
from nncompress.graph.rnn import zero_units
from nncompress.grouped import balance
from nncompress.layers import is_conv1d
from nncompress.masked_norms import is_width_norm, width_norm_zero_channels
from nncompress.norms import is_handled_norm, norm_zero_channels

__all__ = ["kept_indices", "removable_channels", "removal_from_kept", "zero_out_channels"]


@torch.no_grad()
def zero_out_channels(module: nn.Module) -> torch.Tensor | None:
    """For each output channel of ``module``: is it provably zero whatever the input?

    Returns:
        A bool vector over output channels, or None when the layer cannot create a non-zero value from a
        zero input channel (PReLU, affine-free InstanceNorm), so it never blocks a removal.
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        weight = module.weight.transpose(0, 1) if module.transposed else module.weight
        return _rows_zero(weight, module.bias)
    if isinstance(module, nn.Linear):
        return _rows_zero(module.weight, module.bias)
    if is_conv1d(module):
        return _rows_zero(cast(torch.Tensor, module.weight).t(), getattr(module, "bias", None))
    if is_handled_norm(module):  # GroupNorm, FrozenBatchNorm2d
        return norm_zero_channels(module)
    if is_width_norm(module):  # LayerNorm, RMSNorm
        return width_norm_zero_channels(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if not module.affine:
            # (0 - running_mean) / std is not zero: the channel is a constant, not an absent one.
            return torch.zeros(module.num_features, dtype=torch.bool)
        return (module.weight == 0) & (module.bias == 0)
    if isinstance(module, nn.InstanceNorm1d | nn.InstanceNorm2d | nn.InstanceNorm3d):
        return (module.weight == 0) & (module.bias == 0) if module.affine else None
    if isinstance(module, nn.Embedding):
        return _rows_zero(module.weight.t(), None)
    if isinstance(module, nn.LSTM | nn.GRU):
        return zero_units(module)
    if isinstance(module, nn.PReLU):
        return None
    out = next(iter(module.parameters()), None)
    return torch.zeros(out.shape[0] if out is not None else 0, dtype=torch.bool)


def _rows_zero(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    zero = weight.reshape(weight.shape[0], -1).eq(0).all(1)
    if bias is not None:
        zero &= bias.eq(0)
    return zero


def removable_channels(group: ChannelGroup, model: nn.Module) -> list[int]:
    """Root channels that every producing layer of the group sets to zero (so removing them is exact).

    At least one channel always stays, so no layer ends up with zero width.

    Args:
        group: a group of ``model``'s architecture.
        model: the masked model (masks already multiplied into the weights).

    Returns:
        Sorted root channel indices to remove; empty when the group keeps its width or nothing is zero.
    """
    if group.skip_reason is not None:
        return []
    removable = torch.ones(group.channels, dtype=torch.bool)
    has_producer = False
    for layer in group.layers:
        if layer.side != "out":
            continue
        zero = zero_out_channels(model.get_submodule(layer.name))
        if zero is None:
            continue
        has_producer = True
        # Index bookkeeping stays on the CPU whatever device the weights live on.
        index, chans = torch.as_tensor(layer.index), torch.as_tensor(layer.channel)
        removable[chans[~zero.cpu()[index]]] = False
    if not has_producer:
        return []
    for piece in group.parameters:  # an added/multiplied parameter must be zero where channels go
        zero = _zero_slices(model.get_submodule(piece.module).get_parameter(piece.param), piece.dim)
        index, chans = torch.as_tensor(piece.index), torch.as_tensor(piece.channel)
        removable[chans[~zero[index]]] = False
    if group.block > 1:  # a head goes only when all of its channels can
        removable = removable.reshape(-1, group.block).all(1).repeat_interleave(group.block)
    if group.segments > 1:  # a grouped conv's groups each lose the same count
        blocks = removable.reshape(-1, group.block).all(1)
        if blocks.numel() % group.segments:
            return []
        per = blocks.numel() // group.segments
        count = min(int(blocks.reshape(group.segments, per).sum(1).min()), per - 1)
        order = torch.arange(blocks.numel(), dtype=torch.float64)
        blocks = balance(blocks, order, group.segments, count)
        removable = blocks.repeat_interleave(group.block)
    removed = removable.nonzero().flatten().tolist()
    if len(removed) == group.channels:
        removed = removed[group.block :]
    return removed


@torch.no_grad()
def _zero_slices(param: torch.Tensor, dim: int) -> torch.Tensor:
    return param.detach().eq(0).movedim(dim, 0).reshape(param.shape[dim], -1).all(1).cpu()


def kept_indices(
    groups: Sequence[ChannelGroup], removed: dict[str, list[int]]
) -> dict[str, dict[str, list[int]]]:
    """Per layer and side, the original channel indices that survive the removal.

    Args:
        groups: the groups of the unpruned model.
        removed: group key -> removed root channels.

    Returns:
        ``{layer: {"out": [...], "in": [...]}}`` for every layer that loses channels.
    """
    size = {(s.name, s.side): s.size for g in groups for s in g.layers}
    sides, _ = removed_positions(groups, removed)
    kept: dict[str, dict[str, list[int]]] = {}
    for (name, side), gone in sides.items():
        if gone:
            kept.setdefault(name, {})[side] = [i for i in range(size[(name, side)]) if i not in gone]
    return kept


def removal_from_kept(
    groups: Sequence[ChannelGroup], kept: dict[str, dict[str, list[int]]]
) -> dict[str, list[int]]:
    """Inverts :func:`kept_indices`: recorded kept indices -> removed root channels per group.

    Raises:
        ValueError: when the record disagrees with the architecture's coupling (a different model).
    """
    removed: dict[str, list[int]] = {}
    for group in groups:
        # Each recorded layer side implies the removed root channels among those it covers (a branch
        # after a split covers only its section); together they must describe one removal.
        implied: dict[str, tuple[set[int], set[int]]] = {}
        for layer in group.layers:
            record = kept.get(layer.name, {}).get(layer.side)
            if record is None:
                continue
            if record and (min(record) < 0 or max(record) >= layer.size):
                raise ValueError(
                    f"kept indices of {layer.name}.{layer.side} fall outside 0..{layer.size - 1}"
                )
            stays = set(record)
            implied[f"{layer.name}.{layer.side}"] = (
                set(layer.channel),
                {c for i, c in zip(layer.index, layer.channel, strict=True) if i not in stays},
            )
        union = set().union(*(gone for _, gone in implied.values()))
        disagree = sorted(name for name, (covered, gone) in implied.items() if union & covered != gone)
        if disagree:
            raise ValueError(f"kept indices disagree inside the coupled group of {group.key!r}: {disagree}")
        if union:
            removed[group.key] = sorted(union)
    return removed
