"""The channel graph's records: plain, frozen data keyed by module and parameter names.

One :class:`ChannelGroup` carries both descriptions a group needs: the parameter slices pruners rank and
mask (``members``, ``consumers``) and the layer sides the speedup removes channels from (``layers``,
``parameters``). Being plain data, a group found in one process can decide and replay a removal on another
instance of the same architecture (a job's artifact reload replays recorded kept indices this way).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ChannelGroup", "ChannelSlice", "LayerSide", "UnsupportedOp"]


def _positions(index: tuple[int, ...], channel: tuple[int, ...], channels: Iterable[int]) -> list[int]:
    wanted = set(channels)
    return [i for i, c in zip(index, channel, strict=True) if c in wanted]


@dataclass(frozen=True)
class ChannelSlice:
    """The part of one parameter (or buffer) that belongs to (or reads) the channels of a group.

    Attributes:
        module: qualified module name owning the parameter, e.g. ``"layer1.0.bn1"``.
        param: parameter name on that module, e.g. ``"weight"``.
        dim: the dimension the channels run along (0 for conv/linear out, 1 for their input).
        index: positions along ``dim``.
        channel: for each position, the group channel (``0 .. channels-1``) it belongs to. A linear
            after a flatten reads several positions per channel; an attention's ``in_proj_weight``
            holds three (query, key, value).
    """

    module: str
    param: str
    dim: int
    index: tuple[int, ...]
    channel: tuple[int, ...]

    def positions(self, channels: Iterable[int]) -> list[int]:
        """Returns the positions along ``dim`` that belong to any of ``channels``."""
        return _positions(self.index, self.channel, channels)


@dataclass(frozen=True)
class LayerSide:
    """One side of a layer in a group: the unit the speedup shrinks and records kept indices for.

    Attributes:
        name: qualified module name.
        side: ``"out"`` (the layer produces these channels) or ``"in"`` (it reads them). Layers whose
            input and output channels are the same (BatchNorm, depthwise conv) are ``"out"``.
        index: the layer's own channel positions covered by the group.
        channel: for each position, the group channel it moves with.
        size: the layer's channel count on that side before pruning.
    """

    name: str
    side: str
    index: tuple[int, ...]
    channel: tuple[int, ...]
    size: int

    def positions(self, channels: Iterable[int]) -> list[int]:
        """Returns the layer's own positions that belong to any of ``channels``."""
        return _positions(self.index, self.channel, channels)


@dataclass(frozen=True)
class ChannelGroup:
    """A set of output channels that must be kept or removed together.

    Attributes:
        key: the layer the group was found from; removals are keyed by it.
        roots: prunable layers whose output channels are these channels, in model order.
        members: every parameter slice removed with a channel (roots' own weights included).
        consumers: parameter slices whose *input* channels follow the group.
        channels: number of channels in the group.
        layers: every layer side the channels run through (what the speedup shrinks).
        parameters: parameters used directly in ``forward`` (a ViT's ``pos_embed``) that lose the
            channels too; removing a channel is exact only where they are zero.
        feeds_output: the channels reach the model output directly (a classifier's logits); such a
            group must never be pruned.
        blockers: why the group must keep its width, as ``"name: reason"`` (see
            :mod:`nncompress.graph.policy`).
        block: channels must be removed in whole contiguous blocks of this size, because a reshape
            splits them (e.g. ``(batch, tokens, heads * head_dim) -> (..., heads, head_dim)``: only
            whole attention heads can go, or the head reshape would mix channels of different heads).
        segments: the channels form this many equal contiguous segments (the groups of a grouped
            conv that produces or reads them); each segment loses the same number of channels
            (see :mod:`nncompress.grouped`).
    """

    key: str
    roots: tuple[str, ...]
    members: tuple[ChannelSlice, ...]
    consumers: tuple[ChannelSlice, ...]
    channels: int
    layers: tuple[LayerSide, ...] = ()
    parameters: tuple[ChannelSlice, ...] = ()
    feeds_output: bool = False
    blockers: tuple[str, ...] = ()
    block: int = 1
    segments: int = 1

    @property
    def prunable(self) -> bool:
        """True when a pruner may choose channels of this group at all."""
        return bool(self.roots) and self.skip_reason is None

    @property
    def skip_reason(self) -> str | None:
        """Why the group must keep its width (the speedup leaves it whole), or None."""
        if self.feeds_output:
            return "its channels are outputs of the model"
        return "; ".join(self.blockers) if self.blockers else None

    def member_slices(self, module: str) -> list[ChannelSlice]:
        """Returns the member slices that live on ``module``."""
        return [s for s in self.members if s.module == module]

    def root_slice(self, root: str) -> ChannelSlice:
        """Returns the slice whose rows define ``root``'s output channels (its weight's out dim).

        Raises:
            KeyError: ``root`` is not a root of this group.
        """
        # A multi-head attention's output channels are the rows of its out_proj.
        for owner in (root, f"{root}.out_proj"):
            for s in self.members:
                if s.module == owner and s.param == "weight":
                    return s
        # A recurrent layer's channels are hidden units: its first member (weight_ih_l0's gate rows).
        for s in self.members:
            if s.module == root:
                return s
        raise KeyError(f"{root!r} is not a root of this group (roots: {', '.join(self.roots)})")


@dataclass(frozen=True)
class UnsupportedOp:
    """Something in the model that channel pruning cannot go through.

    Attributes:
        name: qualified module name.
        op_type: the module's class name.
        reason: what happens to the channels around it and what the user can do.
    """

    name: str
    op_type: str
    reason: str
