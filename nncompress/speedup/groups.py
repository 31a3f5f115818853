"""Coupled channel groups from Torch-Pruning's dependency graph, and pruning them by index.

A *group* is every (layer, side) whose channels must be removed together: a conv's output and the next
conv's input, both branches of a residual add, the slice of a concat, the features a flatten spreads over a
Linear. Torch-Pruning finds them by tracing autograd; this module turns its groups into plain records
(module names, sides, index arrays in the group root's numbering) so that removal can be decided from masks
or from recorded kept indices, and then executed with ``DependencyGraph.get_pruning_group(...).prune()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch_pruning as tp
from torch import nn

from nncompress.errors import UnsupportedModelError
from nncompress.grouped import balance, grouped_segments
from nncompress.layers import (
    FusedAttention,
    fused_attentions,
    grouped_query_projections,
    is_conv1d,
    is_rms_norm,
    library_pruners,
    output_tensors,
    without_cache,
)
from nncompress.masked_norms import is_width_norm, width_norm_zero_channels
from nncompress.norms import group_norm_block, is_handled_norm, norm_zero_channels
from nncompress.speedup.ghost import SELF_CONCAT_REASON, is_self_concat_node, mark_self_concats
from nncompress.speedup.recurrent import (
    RecurrentPruner,
    opaque_recurrent,
    prune_units,
    recurrent_units,
    zero_units,
)
from nncompress.speedup.shuffle import SHUFFLE_REASON, cut_shuffles, is_shuffle_node, opaque_shuffles
from nncompress.speedup.window_attention import (
    WINDOW_ATTENTION_REASON,
    is_window_attention_node,
    opaque_window_attention,
)

Inputs = tuple[torch.Tensor, ...]

# Layers a group is rooted at, in order of preference. Rooting at the producing conv/linear gives one
# group per producer, even when a concat feeds a BatchNorm over all producers at once (DenseNet); a group
# rooted at such a BatchNorm would merge them and Torch-Pruning mis-maps its concat indices after earlier
# prunes. Norm layers are roots only for groups no producer reaches.
PRIMARY_ROOTS: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.Linear,
    nn.Embedding,
    nn.LSTM,
    nn.GRU,
)
SECONDARY_ROOTS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
)
# Graph nodes for ops between layers (cat, split, add, view ...): they carry channels but own no weights.
_OP_TYPES = {
    tp.ops.OPTYPE.CONCAT,
    tp.ops.OPTYPE.SPLIT,
    tp.ops.OPTYPE.ELEMENTWISE,
    tp.ops.OPTYPE.RESHAPE,
    tp.ops.OPTYPE.UNBIND,
    tp.ops.OPTYPE.EXPAND,
    tp.ops.OPTYPE.SLICE,
}


@dataclass
class Member:
    """One layer side in a group.

    Attributes:
        name: qualified module name.
        side: ``"out"`` (the layer produces these channels) or ``"in"`` (it consumes them). Layers whose
            input and output channels are the same (BatchNorm, depthwise conv) are ``"out"``.
        idxs: the layer's own channel indices covered by the group.
        root_idxs: for each entry of ``idxs``, the group root's channel it moves with.
        size: the layer's channel count on that side before pruning.
    """

    name: str
    module: nn.Module
    side: str
    idxs: torch.Tensor
    root_idxs: torch.Tensor
    size: int


@dataclass
class BareParameter:
    """A parameter used directly in ``forward`` (timm ViT's ``pos_embed``, ConvNeXt's layer scale).

    Torch-Pruning prunes it with the group along ``dim``; removing a channel is exact only where it
    is zero (masked), which :func:`removable_channels` checks.
    """

    name: str
    dim: int
    idxs: torch.Tensor
    root_idxs: torch.Tensor
    zero: torch.Tensor


@dataclass
class ChannelGroup:
    """A coupled group, numbered by its root layer's output channels.

    Attributes:
        root: name of the root layer.
        channels: the root's output channels.
        members: every named layer side in the group (root included).
        skip_reason: why the group must not change shape (its channels stay, as sparsity), or None.
        block: channels go in whole blocks of this size (attention heads), or not at all.
        fused: set for the heads of a fused q/k/v projection, pruned member by member rather than
            through Torch-Pruning's propagation (see :class:`nncompress.layers.FusedAttention`).
        segments: equal contiguous segments (a grouped conv's groups) that must each lose the same
            number of channels (see :mod:`nncompress.grouped`).
    """

    root: str
    root_module: nn.Module
    root_fn: Callable[..., object]
    channels: int
    members: list[Member] = field(default_factory=list)
    skip_reason: str | None = None
    block: int = 1
    fused: FusedAttention | None = None
    recurrent: bool = False
    parameters: list[BareParameter] = field(default_factory=list)
    segments: int = 1


def build_graph(model: nn.Module, inputs: Inputs) -> tp.DependencyGraph:
    """Traces ``model`` on ``inputs`` into a Torch-Pruning dependency graph (the model's mode is restored).

    Args:
        model: the model to analyse; it is pruned in place later through the returned graph.
        inputs: positional example inputs.

    Returns:
        The dependency graph, with LSTM/GRU handled by :class:`RecurrentPruner`.
    """
    recurrent = RecurrentPruner()
    customized: dict[type[nn.Module], tp.pruner.BasePruningFunc] = {nn.LSTM: recurrent, nn.GRU: recurrent}
    customized.update(library_pruners(model))
    was_training = model.training
    try:
        with (
            torch.enable_grad(),
            opaque_recurrent(model) as traced,
            opaque_shuffles(),
            opaque_window_attention(model),
            without_cache(model),
        ):
            dg = tp.DependencyGraph().build_dependency(
                model,
                example_inputs=inputs,
                forward_fn=lambda m, x: m(*x),
                customized_pruners=customized,  # type: ignore[arg-type]
                output_transform=output_tensors,
                verbose=False,
            )
    finally:
        model.train(was_training)
    _order_split_outputs(dg)
    cut_shuffles(dg)
    mark_self_concats(dg)
    dg._nncompress_recurrent = traced  # read by channel_groups (recurrent_units)
    return dg


def _order_split_outputs(dg: tp.DependencyGraph) -> None:
    """Puts each split node's consumers in section order.

    Torch-Pruning maps the i-th consumer it discovered to the i-th section, but it discovers consumers
    walking backwards from the output, so ``a, b = x.split(...)`` can map ``a``'s consumer to ``b``'s
    channels. Autograd knows better: the consumer's grad_fn names the split output it reads.
    """
    for node in dg.module2node.values():
        if node.type != tp.ops.OPTYPE.SPLIT or len(node.outputs) < 2:
            continue

        def section(consumer: object, split: object = node) -> int:
            grad_fn = getattr(consumer, "grad_fn", None)
            hits = [
                nr
                for fn, nr in getattr(grad_fn, "next_functions", ())
                if fn is getattr(split, "grad_fn", None)
            ]
            return min(hits) if hits else 1 << 30

        node.outputs.sort(key=section)


def channel_groups(dg: tp.DependencyGraph) -> list[ChannelGroup]:
    """Lists every coupled group of the traced model with full index arrays.

    Args:
        dg: a graph from :func:`build_graph`.

    Returns:
        One :class:`ChannelGroup` per root layer, in Torch-Pruning's discovery order.
    """
    groups: list[ChannelGroup] = []
    covered: set[nn.Module] = set()
    library = tuple({type(m) for m in dg.module2node if isinstance(m, nn.Module) and is_conv1d(m)})
    skipped = set(grouped_query_projections(dg.model))
    for root_types in ((*PRIMARY_ROOTS, *library), SECONDARY_ROOTS):
        for root_module in list(dg.module2node):
            if root_module in covered or root_module in skipped or not isinstance(root_module, root_types):
                continue
            pruner = dg.get_pruner_of_module(root_module)
            channels = pruner.get_out_channels(root_module) if pruner is not None else None
            if not channels:
                continue
            try:
                group = dg.get_pruning_group(root_module, pruner.prune_out_channels, list(range(channels)))
            except Exception as exc:  # Torch-Pruning's index mapping fails on graphs it cannot follow
                name = dg._module2name.get(root_module, type(root_module).__name__)
                raise UnsupportedModelError(
                    f"could not follow the channels of {name!r} through the graph: "
                    f"{type(exc).__name__}: {exc}",
                    layer=name,
                ) from exc
            covered.update(
                item.dep.target.module
                for item in group.items
                if dg.is_out_channel_pruning_fn(item.dep.handler)
            )
            groups.append(_describe_group(dg, group, root_module, int(channels)))
    groups.extend(_recurrent_groups(dg))
    fused = {fa.fused: fa for fa in fused_attentions(dg.model)}
    return [_fused_group(dg, fused[g.root]) if g.root in fused else g for g in groups]


def _recurrent_groups(dg: tp.DependencyGraph) -> list[ChannelGroup]:
    """One group per LSTM/GRU: its hidden units, and the input features of the layers reading them."""
    groups = []
    for units in recurrent_units(dg, getattr(dg, "_nncompress_recurrent", {})):
        layer = dg.model.get_submodule(units.layer)
        idx = torch.arange(units.hidden)
        members = [Member(units.layer, layer, "out", idx, idx, units.hidden)]
        for reader, width in units.readers:
            cols = torch.arange(width)
            module = dg.model.get_submodule(reader)
            members.append(Member(reader, module, "in", cols, cols % units.hidden, width))
        root_fn = RecurrentPruner().prune_out_channels
        groups.append(
            ChannelGroup(units.layer, layer, root_fn, units.hidden, members, units.blocker, recurrent=True)
        )
    return groups


def _fused_group(dg: tp.DependencyGraph, fa: FusedAttention) -> ChannelGroup:
    """The heads of a fused q/k/v projection, numbered by query channel (0 .. width-1)."""
    fused, out = dg.model.get_submodule(fa.fused), dg.model.get_submodule(fa.out)
    pruner = dg.get_pruner_of_module(fused)
    rows = torch.arange(3 * fa.width)
    cols = torch.arange(fa.width)
    members = [
        Member(fa.fused, fused, "out", rows, rows % fa.width, 3 * fa.width),
        Member(fa.out, out, "in", cols, cols, fa.width),
    ]
    return ChannelGroup(
        fa.fused, fused, pruner.prune_out_channels, fa.width, members, block=fa.head_size, fused=fa
    )


def _describe_group(
    dg: tp.DependencyGraph, group: tp.dependency.Group, root_module: nn.Module, channels: int
) -> ChannelGroup:
    """Turns a Torch-Pruning group (full indices) into a :class:`ChannelGroup` with a skip reason if any."""
    root_fn = group[0].dep.handler
    plan = ChannelGroup(dg._module2name[root_module], root_module, root_fn, channels)
    for item in group.items:
        target = item.dep.target
        if target.type == tp.ops.OPTYPE.OUTPUT:
            plan.skip_reason = "its channels are outputs of the model"
            continue
        if target.type == tp.ops.OPTYPE.PARAMETER:
            plan.parameters.append(_bare_parameter(dg, target, item))
            continue
        if is_self_concat_node(target):
            plan.skip_reason = plan.skip_reason or SELF_CONCAT_REASON
        if is_shuffle_node(target):
            plan.skip_reason = plan.skip_reason or SHUFFLE_REASON
            continue
        if is_window_attention_node(target):
            plan.skip_reason = plan.skip_reason or WINDOW_ATTENTION_REASON
            continue
        if target.type in _OP_TYPES or not isinstance(target.module, nn.Module):
            continue
        module = target.module
        side = "out" if dg.is_out_channel_pruning_fn(item.dep.handler) else "in"
        size = dg.get_out_channels(module) if side == "out" else dg.get_in_channels(module)
        name = dg._module2name[module]
        plan.members.append(Member(name, module, side, _index(item.idxs), _index(item.root_idxs), int(size)))
        # A layer whose node feeds nothing produces the model's output (the tracer then adds no
        # output node): its channels are part of the model's contract.
        if side == "out" and not target.outputs:
            plan.skip_reason = "its channels are outputs of the model"
        segments, reason = grouped_segments(module, name, side == "out", item.idxs, item.root_idxs, channels)
        plan.segments = math.lcm(plan.segments, segments)
        reason = reason and f"{name!r}: {reason}"
        reason = reason or _unremovable(module, name)
        if reason and plan.skip_reason is None:
            plan.skip_reason = reason
        if isinstance(module, nn.GroupNorm):  # only whole norm groups can go (nncompress.norms)
            size, why = group_norm_block(module, item.idxs, item.root_idxs, channels)
            plan.block = math.lcm(plan.block, size)
            if why and plan.skip_reason is None:
                plan.skip_reason = f"{name!r}: {why}"
    return plan


@torch.no_grad()
def _bare_parameter(dg: tp.DependencyGraph, target: Any, item: Any) -> BareParameter:
    param = target.module
    dim = int(target.pruning_dim) % param.dim()
    zero = param.detach().eq(0).movedim(dim, 0).reshape(param.shape[dim], -1).all(1).cpu()
    name = str(dg._param_to_name.get(param))
    return BareParameter(name, dim, _index(item.idxs), _index(item.root_idxs), zero)


def _index(values: list[int]) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long)


def _unremovable(module: nn.Module, name: str) -> str | None:
    # Removing channels that a norm layer normalises *across* changes its mean/variance for the
    # channels that stay, so the shrunk model would no longer compute what the masked one does.
    # LayerNorm over one dimension and RMSNorm shrink exactly (see nncompress.masked_norms).
    if (isinstance(module, nn.LayerNorm) or is_rms_norm(module)) and not is_width_norm(module):
        return f"{type(module).__name__} {name!r} normalises across these channels"
    if isinstance(module, nn.MultiheadAttention):
        return f"nn.MultiheadAttention {name!r} is not supported; write attention with Linear layers"
    return None


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


def removable_channels(group: ChannelGroup) -> list[int]:
    """Root channels that every producing layer of the group sets to zero (so removing them is exact).

    At least one channel always stays, so no layer ends up with zero width.

    Args:
        group: a group of the masked model (masks already multiplied into the weights).

    Returns:
        Sorted root channel indices to remove; empty when the group is skipped or nothing is zero.
    """
    if group.skip_reason is not None:
        return []
    removable = torch.ones(group.channels, dtype=torch.bool)
    has_producer = False
    for member in group.members:
        if member.side != "out":
            continue
        zero = zero_out_channels(member.module)
        if zero is None:
            continue
        has_producer = True
        # Index bookkeeping stays on the CPU whatever device the weights live on.
        removable[member.root_idxs[~zero.cpu()[member.idxs]]] = False
    if not has_producer:
        return []
    for bare in group.parameters:  # an added/multiplied parameter must be zero where channels go
        removable[bare.root_idxs[~bare.zero[bare.idxs]]] = False
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


def kept_indices(
    groups: list[ChannelGroup], removed: dict[str, list[int]]
) -> dict[str, dict[str, list[int]]]:
    """Per layer and side, the original channel indices that survive the removal.

    Args:
        groups: the groups of the unpruned model.
        removed: root name -> removed root channels.

    Returns:
        ``{layer: {"out": [...], "in": [...]}}`` for every layer that loses channels.
    """
    dropped: dict[tuple[str, str], set[int]] = {}
    sizes: dict[tuple[str, str], int] = {}
    for group in groups:
        root_removed = removed.get(group.root)
        if not root_removed:
            continue
        hit = torch.as_tensor(root_removed, dtype=torch.long)
        for member in group.members:
            key = (member.name, member.side)
            sizes[key] = member.size
            dropped.setdefault(key, set()).update(member.idxs[torch.isin(member.root_idxs, hit)].tolist())
    kept: dict[str, dict[str, list[int]]] = {}
    for (name, side), gone in dropped.items():
        if gone:
            kept.setdefault(name, {})[side] = [i for i in range(sizes[(name, side)]) if i not in gone]
    return kept


def removal_from_kept(
    groups: list[ChannelGroup], kept: dict[str, dict[str, list[int]]]
) -> dict[str, list[int]]:
    """Inverts :func:`kept_indices`: recorded kept indices -> removed root channels per group.

    Raises:
        ValueError: when the record disagrees with the architecture's coupling (a different model).
    """
    removed: dict[str, list[int]] = {}
    for group in groups:
        # Each recorded member implies the removed root channels among those it covers (a branch after a
        # split covers only its section); together they must describe one removal.
        implied: dict[str, tuple[set[int], set[int]]] = {}
        for member in group.members:
            record = kept.get(member.name, {}).get(member.side)
            if record is None:
                continue
            if record and (min(record) < 0 or max(record) >= member.size):
                raise ValueError(
                    f"kept indices of {member.name}.{member.side} fall outside 0..{member.size - 1}"
                )
            gone = ~torch.isin(member.idxs, torch.as_tensor(record, dtype=torch.long))
            implied[f"{member.name}.{member.side}"] = (
                set(member.root_idxs.tolist()),
                set(member.root_idxs[gone].tolist()),
            )
        union = set().union(*(gone for _, gone in implied.values()))
        disagree = sorted(name for name, (covered, gone) in implied.items() if union & covered != gone)
        if disagree:
            raise ValueError(f"kept indices disagree inside the coupled group of {group.root!r}: {disagree}")
        if union:
            removed[group.root] = sorted(union)
    return removed


def prune_groups(dg: tp.DependencyGraph, groups: list[ChannelGroup], removed: dict[str, list[int]]) -> None:
    """Removes the chosen root channels of each group, in place, through Torch-Pruning."""
    for group in groups:
        idxs = removed.get(group.root)
        if not idxs:
            continue
        if group.recurrent:  # hidden units: every layer and direction, then the readers' inputs
            hit = torch.as_tensor(idxs, dtype=torch.long)
            for member in group.members:
                if member.side == "out":
                    prune_units(member.module, idxs)
                else:
                    gone = member.idxs[torch.isin(member.root_idxs, hit)].tolist()
                    dg.get_pruner_of_module(member.module).prune_in_channels(member.module, gone)
            continue
        if group.fused is None:
            dg.get_pruning_group(group.root_module, group.root_fn, idxs).prune(record_history=False)
            continue
        # Torch-Pruning's mapping through the q/k/v split is unreliable: prune both layers directly.
        width = group.fused.width
        for member in group.members:
            pruner = dg.get_pruner_of_module(member.module)
            if member.side == "out":
                pruner.prune_out_channels(member.module, [s * width + i for s in range(3) for i in idxs])
            else:
                pruner.prune_in_channels(member.module, list(idxs))
