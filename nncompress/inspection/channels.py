"""How many output channels each coupled group and each selected layer keeps.

A group's channels are chosen once for every layer that produces or carries them; a layer's own
count follows its group, or its weight's shape when the trace did not reach it.
"""

from __future__ import annotations

import math

from nncompress.config import LayerTarget
from nncompress.graph import ChannelGroup
from nncompress.grouped import per_segment
from nncompress.inspection.report import GroupReport, LayerReport

__all__ = ["group_of_each_layer", "group_report", "kept_channels", "layer_report"]


def kept_channels(channels: int, sparse_ratio: float) -> int:
    """How many of ``channels`` survive pruning ``sparse_ratio`` of them.

    The pruned count is rounded down (NNI truncates too) and at least one channel is kept, so a
    layer never disappears. A tiny epsilon absorbs float noise (``0.7 * 10`` is ``7.000000000000001``).

    Args:
        channels: channels before pruning.
        sparse_ratio: fraction to prune, in [0, 1).

    Returns:
        Channels after pruning, in ``[1, channels]``.
    """
    pruned = math.floor(sparse_ratio * channels + 1e-9)
    return max(1, channels - pruned)


def group_of_each_layer(groups: list[ChannelGroup]) -> dict[str, ChannelGroup]:
    """Maps each module to the group its output channels belong to (roots first, then carriers)."""
    owner: dict[str, ChannelGroup] = {}
    for group in groups:
        for root in group.roots:
            owner.setdefault(root, group)
    for group in groups:
        for piece in group.members:
            # Only output-side slices: a depthwise conv or a norm carries the channels it sits on.
            if piece.param == "weight" and piece.dim == 0:
                owner.setdefault(piece.module, group)
    return owner


def group_report(
    gid: int,
    group: ChannelGroup,
    targets: dict[str, LayerTarget],
    structured: dict[str, bool],
) -> tuple[GroupReport, list[str]]:
    """The channels ``group`` keeps under the config, and warnings about how the config meets it.

    Args:
        gid: the group's 1-based id in the report.
        group: the traced group.
        targets: the selected layers by name.
        structured: per selected layer, whether its pruning removes channels.

    Returns:
        The group's report and the warnings (mixed ratios, coupled layers left out of the config).
    """
    modules = list(dict.fromkeys([*group.roots, *(s.module for s in group.members)]))
    carried = tuple(m for m in modules if m not in group.roots)
    selected = tuple(m for m in modules if m in targets)
    deciders = [targets[m] for m in selected if structured[m]]
    messages: list[str] = []
    reason = None
    if not group.prunable:
        reason = "; ".join(group.blockers) if group.blockers else "its channels are the model's output"
    after: int | None = group.channels
    if group.prunable and deciders:
        if any(t.global_group_id is not None for t in deciders):
            after = None
        else:
            ratios = sorted({t.sparse_ratio for t in deciders})
            # One channel choice serves every layer of the group; the smallest ratio keeps every
            # layer at or under what the config asked for it.
            # Attention heads go whole: the ratio counts heads, as the pruner's allocation does.
            block = group.block if group.block > 1 and group.channels % group.block == 0 else 1
            after = kept_channels(group.channels // block, ratios[0]) * block
            if group.segments > 1:  # a grouped conv's groups each lose the same count
                units, segs = group.channels // block, group.segments
                gone = per_segment(units - kept_channels(units, ratios[0]), units, segs) * segs
                after = (units - gone) * block
            if len(ratios) > 1:
                messages.append(
                    f"group #{gid} ({', '.join(group.roots)}) shares one channel choice but the config asks "
                    f"{', '.join(f'{r:g}' for r in ratios)}; {ratios[0]:g} applies to all of them"
                )
        left_out = [r for r in group.roots if r not in targets]
        # A lone producer is expected to follow its norm (SlimPruner selects only the norms); only a
        # coupling the user may not know about is worth a warning.
        if left_out and len(group.roots) > 1:
            messages.append(
                f"group #{gid}: pruning {', '.join(m for m in selected)} also removes the same channels "
                f"from {', '.join(left_out)} (coupled by an add, a concat or a shared consumer)"
            )
    report = GroupReport(
        id=gid,
        layers=group.roots,
        carried_by=carried,
        channels=group.channels,
        channels_after=after,
        selected=selected,
        prunable=group.prunable,
        reason=reason,
    )
    return report, messages


def layer_report(
    target: LayerTarget,
    granularity: str,
    structured: bool,
    group: ChannelGroup | None,
    gid: int | None,
    group_after: int | None,
    *,
    traced: bool,
) -> LayerReport:
    """One selected layer's channels now and after pruning, with notes on what decides them.

    Args:
        target: the layer as the config resolved it.
        granularity: its effective granularity.
        structured: whether pruning removes its output channels.
        group: the group its output channels belong to; None when the trace did not reach it.
        gid: that group's id in the report, when it is shown.
        group_after: the channels the group keeps (None when a global ranking decides).
        traced: whether the model was traced at all.

    Returns:
        The layer's report.
    """
    channels = group.channels if group is not None else _out_channels(target)
    # A fused q/k/v projection has three rows per group channel: report the layer's own count.
    per_channel = _rows_per_channel(group, target.name)
    channels *= per_channel
    if group_after is not None:
        group_after *= per_channel
    notes: list[str] = []
    after: int | None = channels
    if not structured:
        notes.append(
            f"{granularity} granularity: weights are zeroed, output channels stay"
            if granularity != "in_channel"
            else "in_channel granularity: input channels are pruned, output channels stay"
        )
    elif group is None:
        if traced:
            notes.append("not reached by the example inputs; channels unknown to the dependency graph")
        after = kept_channels(channels, target.sparse_ratio) if target.global_group_id is None else None
    elif not group.prunable:
        reason = "; ".join(group.blockers) if group.blockers else "its channels are the model's output"
        notes.append(f"not pruned: {reason}")
        if target.op_type in _PLAIN_LAYERS:  # a kept group may be wider than the layer (GhostNet's concat)
            channels = after = _out_channels(target)
    else:
        after = group_after
        if len(group.roots) > 1 and target.name in group.roots:
            others = [r for r in group.roots if r != target.name]
            notes.append(f"coupled with {', '.join(others)}")
        if target.name not in group.roots:
            notes.append(f"channels follow {', '.join(group.roots)}")
    if structured and after is None:
        notes.append(f"channels decided by the global ranking of group {target.global_group_id!r}")
    return LayerReport(
        name=target.name,
        op_type=target.op_type,
        weight_shape=target.weight_shape,
        sparse_ratio=target.sparse_ratio,
        granularity=granularity,
        structured=structured,
        channels=channels,
        channels_after=after,
        group=gid,
        global_group_id=target.global_group_id,
        dependency_group_id=target.dependency_group_id,
        entry_index=target.entry_index,
        notes=tuple(notes),
    )


_PLAIN_LAYERS = frozenset({"Conv1d", "Conv2d", "Conv3d", "Linear"})


def _rows_per_channel(group: ChannelGroup | None, name: str) -> int:
    if group is None or name not in group.roots or group.channels == 0:
        return 1
    try:
        root = group.root_slice(name)
    except KeyError:
        return 1
    # A recurrent layer's root slice is weight_ih_l0 (gates x units rows); its channels are units.
    if root.param != "weight":
        return 1
    return max(1, len(root.index) // group.channels)


def _out_channels(target: LayerTarget) -> int:
    # Without a traced group: a transposed conv stores (in, out / groups, ...), an embedding
    # (num, dim); everything else keeps output channels in dim 0.
    if target.op_type.startswith("ConvTranspose") and len(target.weight_shape) > 1:
        return target.weight_shape[1]
    if target.op_type == "Embedding":
        return target.weight_shape[1]
    return target.weight_shape[0]
