"""Channel splits with literal section sizes (``torch.split(x, [8, 8], 1)``, ``x.chunk(2, 1)``).

Pruning the layer that produces ``x`` changes how many channels each section holds, and by different
amounts per section. This module finds such splits in the fx graph of the unpruned model, traces the
split input back (through BatchNorm, activations, dropout) to the layer that produced its channels, and
computes the new section sizes from that layer's kept output indices.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

# Modules and functions that keep every channel where it is, so the split input has the producer's channels.
_CHANNEL_PRESERVING_MODULES = (
    nn.modules.batchnorm._BatchNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.LeakyReLU,
    nn.Dropout,
    nn.Identity,
)
_CHANNEL_PRESERVING_CALLS: set[object] = {torch.relu, torch.sigmoid, torch.tanh, "relu", "sigmoid", "tanh"}
_CHANNEL_PRESERVING_CALLS |= {F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.leaky_relu, F.dropout}
_CHANNEL_PRESERVING_CALLS |= {"contiguous", "clone"}
_PRODUCERS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class SplitSite:
    """A split of a producer's channels into literal sections.

    Attributes:
        node: fx node name of the split/chunk call.
        dim: the split dimension (non-negative).
        sections: section sizes in the unpruned model.
        producer: name of the layer whose output channels are split.
        chunks: the ``chunks`` argument when the call is ``chunk`` (sizes then follow the tensor), else None.
    """

    node: str
    dim: int
    sections: tuple[int, ...]
    producer: str
    chunks: int | None


def _split_call(node: fx.Node) -> tuple[object, object] | None:
    """(sizes-or-chunks, dim) of a split/chunk call, or None for other nodes."""
    is_split = (node.op == "call_function" and node.target in (torch.split, torch.chunk)) or (
        node.op == "call_method" and node.target in ("split", "chunk")
    )
    if not is_split:
        return None
    size = (
        node.args[1]
        if len(node.args) > 1
        else node.kwargs.get("split_size_or_sections", node.kwargs.get("chunks"))
    )
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    return size, dim


def _producer(node: object, modules: dict[str, nn.Module]) -> str | None:
    """The producing conv/linear of ``node``'s channels, through channel-preserving ops only."""
    while isinstance(node, fx.Node):
        if node.op == "call_module":
            module = modules.get(str(node.target))
            if isinstance(module, _PRODUCERS):
                return str(node.target)
            if not isinstance(module, _CHANNEL_PRESERVING_MODULES):
                return None
        elif node.op in ("call_function", "call_method"):
            if node.target not in _CHANNEL_PRESERVING_CALLS:
                return None
        else:
            return None
        node = node.args[0] if node.args else None
    return None


def find_split_sites(gm: fx.GraphModule) -> list[SplitSite]:
    """Split/chunk calls with literal sizes on a producer's channel dimension.

    Args:
        gm: the traced unpruned model after shape propagation (``tensor_meta`` on every node).

    Returns:
        One :class:`SplitSite` per split whose input channels come straight from a conv/linear.
    """
    modules = dict(gm.named_modules())
    sites = []
    for node in gm.graph.nodes:
        call = _split_call(node)
        if call is None or not isinstance(node.args[0], fx.Node):
            continue
        size, dim = call
        meta = node.args[0].meta.get("tensor_meta")
        if meta is None or not isinstance(dim, int):
            continue
        shape = tuple(meta.shape)
        dim = dim % len(shape)
        producer = _producer(node.args[0], modules)
        if producer is None:
            continue
        channel_dim = 1 if isinstance(modules[producer], nn.modules.conv._ConvNd) else len(shape) - 1
        if dim != channel_dim:
            continue
        channels = torch.empty(shape[dim])
        if _is_chunk(node) and isinstance(size, int):
            sections = tuple(len(p) for p in channels.chunk(size))
            sites.append(SplitSite(node.name, dim, sections, producer, size))
        elif not _is_chunk(node) and isinstance(size, int):
            sites.append(
                SplitSite(node.name, dim, tuple(len(p) for p in channels.split(size)), producer, None)
            )
        elif not _is_chunk(node) and isinstance(size, list | tuple) and all(isinstance(s, int) for s in size):
            sites.append(SplitSite(node.name, dim, tuple(int(s) for s in size), producer, None))
    return sites


def _is_chunk(node: fx.Node) -> bool:
    return node.target in (torch.chunk, "chunk")


def new_sections(sites: list[SplitSite], kept: dict[str, dict[str, list[int]]]) -> dict[str, tuple[int, ...]]:
    """Section sizes after pruning, for the splits whose code would now cut in the wrong places.

    Args:
        sites: from :func:`find_split_sites`.
        kept: kept indices per layer (``SpeedupResult.kept``).

    Returns:
        fx node name -> new section sizes, only where the literal code would split differently.
    """
    changes: dict[str, tuple[int, ...]] = {}
    for site in sites:
        kept_out = kept.get(site.producer, {}).get("out")
        if kept_out is None:
            continue
        bounds = [0]
        for size in site.sections:
            bounds.append(bounds[-1] + size)
        after = tuple(sum(1 for k in kept_out if lo <= k < hi) for lo, hi in itertools.pairwise(bounds))
        if site.chunks is not None:
            as_coded = tuple(len(p) for p in torch.empty(sum(after)).chunk(site.chunks))
        else:
            as_coded = site.sections
        if after != as_coded:
            changes[site.node] = after
    return changes
