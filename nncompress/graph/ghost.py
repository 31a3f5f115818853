"""Concats of a tensor with a channel-wise function of itself (GhostNet's ``cat([x1, cheap(x1)])``).

The cheap operation is a depthwise conv, so channel ``j`` and channel ``init + j`` of the concat both come
from channel ``j`` of the same producer. Torch-Pruning keeps one root channel per layer channel and records
only one of the two (the other is lost to its visited check), so the group no longer says which channels
go together and the speedup removed the wrong rows. :func:`mark_self_concats` finds such concats after the
trace; the channel graph refuses the groups through them by name (:data:`SELF_CONCAT_REASON`).
"""

from __future__ import annotations

from typing import Any

import torch_pruning as tp
from torch import nn

__all__ = ["SELF_CONCAT_REASON", "is_self_concat_node", "mark_self_concats"]

SELF_CONCAT_REASON = (
    "a concat joins a tensor with a depthwise function of itself (GhostNet's cheap operation), so two "
    "of these channels are one channel of the layer before; they are kept"
)

_PER_CHANNEL = {tp.ops.OPTYPE.DEPTHWISE_CONV, tp.ops.OPTYPE.BN, tp.ops.OPTYPE.IN, tp.ops.OPTYPE.PRELU}


def _source(node: Any, chain: list[Any] | None = None) -> Any:
    """The first node up the chain that is not a per-channel op (norm, activation, depthwise conv)."""
    seen = 0
    while seen < 64:
        seen += 1
        if chain is not None:
            chain.append(node)
        one_input = len(node.inputs) == 1
        per_channel = node.type in _PER_CHANNEL or (
            node.type == tp.ops.OPTYPE.ELEMENTWISE and one_input and not isinstance(node.module, nn.Module)
        )
        if not (per_channel and one_input):
            return node
        node = node.inputs[0]
    return node


def mark_self_concats(dg: tp.DependencyGraph) -> None:
    """Flags every concat node of ``dg`` that two of its inputs reach from the same producer, and every
    node between them (a group may hold the producer or the depthwise conv without the concat)."""
    for node in list(dg.module2node.values()):
        if node.type != tp.ops.OPTYPE.CONCAT or len(node.inputs) < 2:
            continue
        chain: list[Any] = []
        sources = [id(_source(i, chain)) for i in node.inputs]
        if len(set(sources)) < len(sources):
            for hit in (node, *chain):
                hit._nncompress_self_concat = True


def is_self_concat_node(node: Any) -> bool:
    """True for a node flagged by :func:`mark_self_concats` (the concat or a layer feeding it)."""
    return bool(getattr(node, "_nncompress_self_concat", False))
