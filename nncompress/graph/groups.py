"""Reading the channel groups off a traced graph: one record per group, for pruners and speedup alike.

Groups are found from every conv/linear/embedding (then from norms no producer reaches), each with
Torch-Pruning's ``get_pruning_group`` over all of its output channels. Each item of such a group is
turned into a layer side (what the speedup shrinks) and parameter slices (what pruners mask), and the
support policy (:mod:`nncompress.graph.policy`) records why the group must keep its width, if it must.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch_pruning as tp
from torch import nn

from nncompress.errors import UnsupportedModelError
from nncompress.graph.policy import (
    GROUPED_QUERY_REASON,
    NORM_ROOTS,
    ROOT_TYPES,
    layer_blocker,
    node_blocker,
)
from nncompress.graph.records import ChannelGroup, ChannelSlice, LayerSide
from nncompress.graph.rnn import PASS_OPS
from nncompress.graph.slices import layer_slices
from nncompress.grouped import grouped_segments
from nncompress.layers import conv1d_types, grouped_query_projections
from nncompress.norms import group_norm_block

__all__ = ["graph_groups"]

# Graph nodes for ops between layers (cat, split, add, view ...): they carry channels but own no weights.
_OP_TYPES = {*PASS_OPS, tp.ops.OPTYPE.EXPAND}


def graph_groups(dg: tp.DependencyGraph, names: dict[nn.Module, str]) -> list[ChannelGroup]:
    """Every coupled group Torch-Pruning finds from a root layer, described by name.

    Args:
        dg: a graph from :func:`nncompress.graph.trace.trace`.
        names: module -> qualified name in the traced model.

    Raises:
        UnsupportedModelError: Torch-Pruning cannot follow a layer's channels through the graph.
    """
    order = {n: i for i, n in enumerate(names.values())}
    param_names: dict[Any, str] = dict(getattr(dg, "_param_to_name", {}))
    skipped = set(grouped_query_projections(dg.model))
    groups: list[ChannelGroup] = []
    covered: set[nn.Module] = set()
    for root_types in ((*ROOT_TYPES, *conv1d_types(dg.model)), NORM_ROOTS):
        for root in list(dg.module2node):
            if root in covered or root in skipped or not isinstance(root, root_types):
                continue
            pruner = dg.get_pruner_of_module(root)
            channels = pruner.get_out_channels(root) if pruner is not None else None
            if not channels:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tp_group = dg.get_pruning_group(root, pruner.prune_out_channels, list(range(channels)))
            except Exception as exc:  # Torch-Pruning's index mapping fails on graphs it cannot follow
                name = names.get(root, type(root).__name__)
                raise UnsupportedModelError(
                    f"could not follow the channels of {name!r} through the graph: "
                    f"{type(exc).__name__}: {exc}",
                    layer=name,
                ) from exc
            covered.update(
                item.dep.target.module
                for item in tp_group.items
                if dg.is_out_channel_pruning_fn(item.dep.handler)
            )
            group = _describe(dg, tp_group, names[root], int(channels), names, param_names, order, skipped)
            if group is not None:
                groups.append(group)
    return groups


def _describe(
    dg: tp.DependencyGraph,
    tp_group: Any,
    key: str,
    channels: int,
    names: dict[nn.Module, str],
    param_names: dict[Any, str],
    order: dict[str, int],
    skipped: set[nn.Module],
) -> ChannelGroup | None:
    roots: list[str] = []
    members: list[ChannelSlice] = []
    consumers: list[ChannelSlice] = []
    layers: list[LayerSide] = []
    parameters: list[ChannelSlice] = []
    blockers: list[str] = []
    feeds_output = False
    block = segments = 1
    for item in tp_group.items:
        target = item.dep.target
        module = target.module
        idxs = tuple(int(i) for i in item.idxs)
        chans = tuple(int(i) for i in item.root_idxs)
        is_out = dg.is_out_channel_pruning_fn(item.dep.handler)
        reason, opaque = node_blocker(target)
        if reason is not None:
            where = names.get(module) if isinstance(module, nn.Module) else None
            blockers.append(f"{where or 'concat'}: {reason}" if not opaque else reason)
        if opaque:  # a cut shuffle's sink reads nothing on: it is not a model output
            continue
        # A node nothing reads is a model output: Torch-Pruning adds an explicit output node only
        # when the last op is not a module (e.g. log_softmax after the classifier).
        if target.type == tp.ops.OPTYPE.OUTPUT or (is_out and not target.outputs):
            feeds_output = True
        if target.type == tp.ops.OPTYPE.OUTPUT:
            continue
        if target.type == tp.ops.OPTYPE.PARAMETER:
            full = param_names.get(module)
            if full is not None:
                owner, _, pname = full.rpartition(".")
                piece = ChannelSlice(owner, pname, target.pruning_dim % module.dim(), idxs, chans)
                members.append(piece)
                parameters.append(piece)
            continue
        if target.type == tp.ops.OPTYPE.RESHAPE:
            block = math.lcm(block, _split_block(target.grad_fn, channels))
            continue
        if target.type in _OP_TYPES or not isinstance(module, nn.Module) or module not in names:
            continue
        name = names[module]
        size = dg.get_out_channels(module) if is_out else dg.get_in_channels(module)
        layers.append(LayerSide(name, "out" if is_out else "in", idxs, chans, int(size or len(idxs))))
        why = layer_blocker(module, is_out)
        if why is not None:
            blockers.append(f"{name}: {why}")
        if module in skipped and is_out:
            blockers.append(f"{name}: {GROUPED_QUERY_REASON}")
        if isinstance(module, nn.GroupNorm):  # only whole norm groups can go (nncompress.norms)
            size, why = group_norm_block(module, idxs, chans, channels)
            block = math.lcm(block, size)
            if why:
                blockers.append(f"{name}: {why}")
        seg, why = grouped_segments(module, name, is_out, idxs, chans, channels)
        segments = math.lcm(segments, seg)
        if why:
            blockers.append(f"{name}: {why}")
        out_slices, in_slices, is_root = layer_slices(module, name, is_out, idxs, chans)
        members.extend(out_slices)
        consumers.extend(in_slices)
        if is_root and name not in roots:
            roots.append(name)
    if not layers and not members:
        return None
    return ChannelGroup(
        key=key,
        roots=tuple(sorted(roots, key=lambda r: order.get(r, 0))),
        members=tuple(members),
        consumers=tuple(consumers),
        channels=channels,
        layers=tuple(layers),
        parameters=tuple(parameters),
        feeds_output=feeds_output,
        blockers=tuple(dict.fromkeys(blockers)),
        block=block if channels % block == 0 else 1,
        segments=segments if channels % segments == 0 else 1,
    )


def _split_block(grad_fn: Any, channels: int) -> int:
    """Block size a view/reshape imposes on a channel dimension of size ``channels`` (1 if none).

    The forward input shape is saved on the backward node, the output shape is its input metadata.
    If the channel dimension's elements end up spread over several output dimensions, e.g.
    ``(B, T, 64) -> (B, T, 4, 16)``, a channel only stays in its block of 16 when whole blocks go.
    A merge such as the flatten ``(B, 50, 4, 4) -> (B, 800)`` imposes nothing.
    """
    try:
        in_shape = [int(d) for d in grad_fn._saved_self_sym_sizes]
        out_shape = [int(d) for d in grad_fn._input_metadata[0].shape]
    except (AttributeError, IndexError, TypeError, RuntimeError):
        return 1  # private autograd metadata missing in this torch version: assume no split
    block = 1
    for cd in (i for i, d in enumerate(in_shape) if d == channels):
        inner = math.prod(in_shape[cd + 1 :])
        span = channels * inner
        tail = 1
        for j in range(len(out_shape) - 1, -1, -1):
            tail *= out_shape[j]
            if tail == span:
                after = math.prod(out_shape[j + 1 :])
                if after > inner and after % inner == 0 and channels % (after // inner) == 0:
                    block = math.lcm(block, after // inner)
                break
            if tail > span:
                break
    return block
