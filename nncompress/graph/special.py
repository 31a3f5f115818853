"""Groups the graph search does not produce itself: fused q/k/v heads, and layers it leaves out.

A fused ``qkv`` projection's heads are numbered by query channel and removed from q, k and v at once
(Torch-Pruning's mapping through the q/k/v split is unreliable). Grouped-query projections and the
Linears inside Swin window attention are skipped by the search (see :mod:`nncompress.graph.policy`);
they get groups of their own that keep their width, so preflight names them.
"""

from __future__ import annotations

from torch import nn

from nncompress.graph.policy import GROUPED_QUERY_REASON
from nncompress.graph.records import ChannelGroup, ChannelSlice, LayerSide
from nncompress.graph.window_attention import WINDOW_ATTENTION_REASON, is_window_attention
from nncompress.layers import FusedAttention, grouped_query_projections, is_conv1d

__all__ = ["blocked_groups", "fused_group"]


def fused_group(model: nn.Module, fa: FusedAttention) -> ChannelGroup:
    """The heads of a fused q/k/v projection: channel ``c`` is row ``c`` of each of q, k and v."""
    fused, out = model.get_submodule(fa.fused), model.get_submodule(fa.out)
    rows = tuple(range(3 * fa.width))
    chans = tuple(r % fa.width for r in rows)
    members = [ChannelSlice(fa.fused, "weight", 1 if is_conv1d(fused) else 0, rows, chans)]
    if getattr(fused, "bias", None) is not None:
        members.append(ChannelSlice(fa.fused, "bias", 0, rows, chans))
    cols = tuple(range(fa.width))
    return ChannelGroup(
        key=fa.fused,
        roots=(fa.fused,),
        members=tuple(members),
        consumers=(ChannelSlice(fa.out, "weight", 0 if is_conv1d(out) else 1, cols, cols),),
        channels=fa.width,
        layers=(
            LayerSide(fa.fused, "out", rows, chans, 3 * fa.width),
            LayerSide(fa.out, "in", cols, cols, fa.width),
        ),
        block=fa.head_size,
    )


def blocked_groups(model: nn.Module, names: dict[nn.Module, str], covered: set[str]) -> list[ChannelGroup]:
    """Groups that keep their width for grouped-query and window-attention Linears no group covers."""
    found: list[tuple[nn.Module, str]] = [
        (module, GROUPED_QUERY_REASON)
        for module in grouped_query_projections(model)
        if isinstance(module, nn.Linear)
    ]
    for attention in (m for m in model.modules() if is_window_attention(m)):
        found += [(attention.get_submodule(p), WINDOW_ATTENTION_REASON) for p in ("qkv", "proj")]
    groups = []
    for module, reason in found:
        name = names[module]
        if name in covered:
            continue
        covered.add(name)
        channels = int(module.get_parameter("weight").shape[0])
        index = tuple(range(channels))
        groups.append(
            ChannelGroup(
                key=name,
                roots=(name,),
                members=(ChannelSlice(name, "weight", 0, index, index),),
                consumers=(),
                channels=channels,
                layers=(LayerSide(name, "out", index, index, channels),),
                blockers=(f"{name}: {reason}",),
            )
        )
    return groups
