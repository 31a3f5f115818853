"""Channel shuffles (ShuffleNet's view → transpose → view) seen by the channel graph as one opaque op.

Torch-Pruning follows a channel shuffle as two reshapes and fails inside its index mapping (a
``ZeroDivisionError`` on torchvision's ShuffleNetV2). While tracing, :func:`opaque_shuffles` watches
tensor calls: a view that splits the channel dim ``(B, C, ...) -> (B, g, C / g, ...)``, a swap of those
two dims, and the view that merges them back are replaced, for autograd only, by one
:class:`ChannelShuffle` node reading the input. The channel graph then refuses the channels that pass
through such a node by name (:func:`is_shuffle_node`), since removing any of them would change which
channels the shuffle interleaves; layers on either side whose channels stay inside a branch still prune.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch_pruning as tp
from torch.overrides import TorchFunctionMode
from torch_pruning.dependency.node import Node

__all__ = ["SHUFFLE_REASON", "ChannelShuffle", "cut_shuffles", "is_shuffle_node", "opaque_shuffles"]

SHUFFLE_REASON = (
    "a channel shuffle (view → transpose → view) interleaves these channels; they are kept, "
    "the convs inside each branch still prune"
)

_VIEWS: set[Callable[..., Any]] = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape}
_SWAPS: set[Callable[..., Any]] = {
    torch.Tensor.transpose,
    torch.transpose,
    torch.Tensor.permute,
    torch.permute,
}


class ChannelShuffle(torch.autograd.Function):
    """Presents a shuffled tensor to autograd as computed directly from the unshuffled one."""

    @staticmethod
    def forward(ctx: Any, source: torch.Tensor, shuffled: torch.Tensor) -> torch.Tensor:
        ctx.shape = source.shape
        return shuffled.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.new_zeros(ctx.shape), None


def is_shuffle_node(node: Any) -> bool:
    """True for a Torch-Pruning graph node that stands for a :class:`ChannelShuffle`."""
    grad_fn = getattr(node, "grad_fn", None)
    return grad_fn is not None and type(grad_fn).__name__ == "ChannelShuffleBackward"


def _is_split(source: torch.Tensor, out: torch.Tensor) -> bool:
    # (B, C, *rest) -> (B, g, C / g, *rest) with 1 < g < C
    return (
        source.dim() >= 2
        and out.dim() == source.dim() + 1
        and out.shape[0] == source.shape[0]
        and out.shape[1] * out.shape[2] == source.shape[1]
        and 1 < out.shape[1] < source.shape[1]
        and out.shape[3:] == source.shape[2:]
    )


def _swaps_group_dims(func: Callable[..., Any], args: tuple[Any, ...]) -> bool:
    dims = [a for a in args[1:] if isinstance(a, int)]
    if func in (torch.Tensor.permute, torch.permute):
        order = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else dims
        return list(order[:3]) == [0, 2, 1]
    return sorted(d % args[0].dim() for d in dims) == [1, 2]


class _ShuffleMode(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        # tensor -> (the unshuffled source, whether its group dims were swapped); the tensors are
        # held so their ids stay unique while tracing
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor, bool]] = {}

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if not args or not isinstance(args[0], torch.Tensor) or not isinstance(out, torch.Tensor):
            return out
        seen = self.pending.get(id(args[0]))
        if seen is not None and seen[1] is not args[0]:
            seen = None  # the id was reused by another tensor
        if func in _VIEWS:
            if seen is not None and seen[2] and out.shape == seen[0].shape:
                return ChannelShuffle.apply(seen[0], out.detach())
            if _is_split(args[0], out):
                self.pending[id(out)] = (args[0], out, False)
        elif func is torch.Tensor.contiguous and seen is not None:
            self.pending[id(out)] = (seen[0], out, seen[2])
        elif func in _SWAPS and seen is not None and _swaps_group_dims(func, args):
            self.pending[id(out)] = (seen[0], out, True)
        return out


@contextmanager
def opaque_shuffles() -> Iterator[None]:
    """While active, every channel shuffle runs as usual but reads as one :class:`ChannelShuffle` node."""
    with _ShuffleMode():
        yield


def cut_shuffles(dg: tp.DependencyGraph) -> None:
    """Splits every :class:`ChannelShuffle` node of ``dg`` into a sink and a source, in place.

    The channels before a shuffle and after it are then separate groups, each holding one half of
    the node (so both are refused by name); Torch-Pruning never maps indices through the shuffle,
    which it cannot do (its split/concat offsets fail on either side of it).
    """
    for node in [n for n in dg.module2node.values() if is_shuffle_node(n)]:
        source = Node(copy.copy(node.module), node.grad_fn, f"{node._name or 'shuffle'}.out")
        source.outputs, node.outputs = node.outputs, []
        kept = []
        for dep in node.dependencies:
            if dep.target in source.outputs:
                dep.source = source
                source.dependencies.append(dep)
            else:
                kept.append(dep)
        node.dependencies = kept
        for reader in source.outputs:
            reader.inputs = [source if i is node else i for i in reader.inputs]
            for dep in reader.dependencies:
                if dep.target is node:
                    dep.target = source
        dg.module2node[source.module] = source
