"""Removing chosen channels from a model by name: what the speedup (and a replay of kept indices) executes.

Each group's removal (root channels, keyed by ``group.key``) becomes, per layer side, the union of its own
positions across groups; each side is then cut once with its Torch-Pruning handler. Working from names and
original positions, not from a live Torch-Pruning graph, lets the graph found on one instance shrink
another (a masked deep copy, or a fresh instance reloading an artifact).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from nncompress.graph.records import ChannelGroup
from nncompress.graph.trace import handlers

__all__ = ["prune_channels", "removed_positions"]

Positions = dict[tuple[str, str], set[int]]


def removed_positions(
    groups: Sequence[ChannelGroup], removed: Mapping[str, Sequence[int]]
) -> tuple[Positions, Positions]:
    """Per layer side and per bare parameter, the original positions that go.

    Returns:
        ``({(layer, side): positions}, {(owner module, param): positions})``.
    """
    sides: Positions = {}
    params: Positions = {}
    for group in groups:
        gone = removed.get(group.key)
        if not gone:
            continue
        for layer in group.layers:
            sides.setdefault((layer.name, layer.side), set()).update(layer.positions(gone))
        for piece in group.parameters:
            params.setdefault((piece.module, piece.param), set()).update(piece.positions(gone))
    return sides, params


@torch.no_grad()
def prune_channels(
    model: nn.Module, groups: Sequence[ChannelGroup], removed: Mapping[str, Sequence[int]]
) -> None:
    """Removes ``removed`` root channels of each group from ``model``, in place.

    Args:
        model: an instance of the architecture the groups were found on.
        groups: its channel groups.
        removed: group key -> root channels to remove.
    """
    sides, params = removed_positions(groups, removed)
    custom = handlers(model)
    registered = tp.DependencyGraph().REGISTERED_PRUNERS
    for (name, side), positions in sides.items():
        if not positions:
            continue
        module = model.get_submodule(name)
        pruner = custom.get(type(module)) or registered.get(tp.ops.module2type(module))
        if pruner is None:
            raise ValueError(f"no pruning handler for {type(module).__name__} ({name})")
        pruner.pruning_dim = -1  # what Torch-Pruning sets for a module before calling a handler
        cut = pruner.prune_out_channels if side == "out" else pruner.prune_in_channels
        cut(module, sorted(positions))
    for (owner, param), positions in params.items():
        module = model.get_submodule(owner)
        tensor = getattr(module, param)
        piece = next(p for g in groups for p in g.parameters if (p.module, p.param) == (owner, param))
        keep = [i for i in range(tensor.shape[piece.dim]) if i not in positions]
        value = tensor.detach().index_select(piece.dim, torch.as_tensor(keep, device=tensor.device))
        setattr(module, param, nn.Parameter(value.contiguous(), tensor.requires_grad))
