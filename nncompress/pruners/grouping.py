"""Which channel groups the config reaches, and the fallback when the model cannot be traced.

With example inputs, groups come from :class:`nncompress.graph.ChannelGraph` (residual adds,
concats, depthwise convs...). Without them (NNI's v2 pruners take no input), each targeted layer
gets a group of its own plus the BatchNorm directly after it in module order. That fallback is
blind to residual adds and to which layer produces the model output: a coupled layer is then
pruned on its own, which the speedup cannot realise. Pass ``dummy_input`` for anything but a
plain feed-forward stack.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from nncompress.graph import ChannelGroup, ChannelSlice
from nncompress.pruners.importance import out_dim

__all__ = ["anchors_of", "fallback_groups", "following_norm"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_CHANNEL_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def _weighted_leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (n, m)
        for n, m in model.named_modules()
        if not list(m.children()) and any(True for _ in m.parameters(recurse=False))
    ]


def _channels(module: nn.Module) -> int | None:
    if isinstance(module, nn.modules.conv._ConvNd):
        return int(module.out_channels)
    if isinstance(module, nn.Linear):
        return int(module.out_features)
    if isinstance(module, _NORMS):
        return int(getattr(module, "num_features", getattr(module, "num_channels", 0)))
    return None


def following_norm(model: nn.Module, name: str) -> str | None:
    """The norm layer registered right after ``name`` with as many channels, if any.

    Module order is a proxy for execution order; it holds for the usual ``conv, bn`` pairs.
    """
    leaves = _weighted_leaves(model)
    names = [n for n, _ in leaves]
    if name not in names:
        return None
    i = names.index(name)
    if i + 1 >= len(leaves):
        return None
    nxt_name, nxt = leaves[i + 1]
    if isinstance(nxt, _NORMS) and _channels(nxt) == _channels(leaves[i][1]):
        return nxt_name
    return None


def _preceding_layer(model: nn.Module, name: str) -> str | None:
    leaves = _weighted_leaves(model)
    names = [n for n, _ in leaves]
    i = names.index(name) if name in names else 0
    if i == 0:
        return None
    prev_name, prev = leaves[i - 1]
    if isinstance(prev, _CHANNEL_LAYERS) and _channels(prev) == _channels(leaves[i][1]):
        return prev_name
    return None


def _own_slices(model: nn.Module, name: str) -> list[ChannelSlice]:
    module = model.get_submodule(name)
    n = _channels(module) or 0
    index = tuple(range(n))
    slices = [ChannelSlice(name, "weight", out_dim(module), index, index)]
    if getattr(module, "bias", None) is not None:
        slices.append(ChannelSlice(name, "bias", 0, index, index))
    return slices


def fallback_groups(model: nn.Module, targets: Iterable[str]) -> list[ChannelGroup]:
    """One group per targeted conv/linear (or norm), with the norm right after it.

    Args:
        model: the model.
        targets: targeted layer names.

    Returns:
        Groups whose roots are the conv/linear layers; a targeted norm joins the layer just before it.
    """
    groups: list[ChannelGroup] = []
    done: set[str] = set()
    for name in targets:
        module = model.get_submodule(name)
        if isinstance(module, _NORMS):
            root = _preceding_layer(model, name)
            if root is None:
                continue
        elif isinstance(module, _CHANNEL_LAYERS) and not (
            isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
        ):
            root = name
        else:
            continue
        if root in done:
            continue
        done.add(root)
        members = _own_slices(model, root)
        norm = following_norm(model, root)
        if norm is not None and model.get_submodule(norm).weight is not None:
            members += _own_slices(model, norm)
        groups.append(
            ChannelGroup(
                key=root, roots=(root,), members=tuple(members), consumers=(), channels=_channels(module) or 0
            )
        )
    return groups


def anchors_of(group: ChannelGroup, targets: Iterable[str]) -> list[str]:
    """The targeted layers a group is ranked by: targeted roots, norms or depthwise convs in it."""
    wanted = list(targets)
    own = {s.module for s in group.members if s.param == "weight"}
    return [t for t in wanted if t in group.roots or t in own]
