"""From channel importance to the channels each unit prunes: per layer, or ranked globally.

A *unit* is one channel choice: a coupled channel group (or several groups a user tied together
with ``dependency_group_id``) with the aggregated importance of its targeted layers. Counting
follows NNI: a layer of ``n`` channels at ratio ``r`` prunes ``int(r * n)`` channels (so the seed's
conv1 keeps 10 of 20), and never all of them.

Global ranking (``total_sparsity`` / ``global_group_id``) mirrors NNI's budget: the group's ratio
is taken of the *weight elements* of its layers, and channels are removed in ascending order of
their importance normalised within their own unit (raw L1 norms of a 3x3x512 filter and of a
1x1x16 one are not comparable), while each unit stays within ``[min, max]`` of its channels and
keeps at least one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from nncompress.graph import ChannelGroup
from nncompress.grouped import balance, per_segment

__all__ = ["Unit", "allocate", "prune_count"]

_EPS = 1e-9  # int(0.3 * 10) would otherwise be 2 on some ratios because of float rounding


@dataclass(frozen=True)
class Unit:
    """One shared channel choice.

    Attributes:
        groups: the coupled channel groups that take this choice.
        anchors: the targeted layers whose importance was aggregated.
        metric: importance per channel, higher is more important; shape ``(channels,)``.
        sparse_ratio: fraction of channels to prune (for a global group: the group's ratio).
        min_ratio: floor, if any.
        max_ratio: cap, if any.
        global_group_id: units sharing one are ranked together.
        cost: weight elements of the anchors removed with one channel (the global budget's unit).
        block: channels go in whole contiguous blocks of this size (attention heads); ratios and
            caps then count blocks.
        segments: equal contiguous segments (a grouped conv's groups) that each lose the same
            number of channels (blocks, when ``block > 1``).
    """

    groups: tuple[ChannelGroup, ...]
    anchors: tuple[str, ...]
    metric: torch.Tensor
    sparse_ratio: float
    min_ratio: float | None
    max_ratio: float | None
    global_group_id: str | None
    cost: int
    block: int = 1
    segments: int = 1

    @property
    def channels(self) -> int:
        return int(self.metric.numel())

    def bounds(self) -> tuple[int, int]:
        """(fewest, most) channels this unit may prune."""
        n = self.channels
        low = prune_count(self.min_ratio or 0.0, n)
        high = prune_count(self.max_ratio if self.max_ratio is not None else 1.0, n)
        return low, max(low, high)


def prune_count(ratio: float, channels: int) -> int:
    """How many of ``channels`` a ratio prunes: NNI's ``int(ratio * n)``, keeping at least one."""
    return max(0, min(int(ratio * channels + _EPS), channels - 1))


def _lowest(metric: torch.Tensor, k: int) -> torch.Tensor:
    pruned = torch.zeros(metric.numel(), dtype=torch.bool)
    if k > 0:
        # stable: equal importance prunes the lower index first, so results are reproducible
        order = torch.argsort(metric.detach().double().cpu(), stable=True)
        pruned[order[:k]] = True
    return pruned


def allocate(units: list[Unit]) -> list[torch.Tensor]:
    """Chooses the pruned channels of every unit.

    Args:
        units: the units, in any order.

    Returns:
        For each unit (same order), a bool tensor of shape ``(channels,)``: True = pruned.
    """
    blocked = [_as_blocks(u) for u in units]
    return [
        _balanced(b, pruned).repeat_interleave(u.channels // b.channels)
        for u, b, pruned in zip(units, blocked, _allocate(blocked), strict=True)
    ]


def _balanced(unit: Unit, pruned: torch.Tensor) -> torch.Tensor:
    # A grouped conv keeps its groups only when each loses the same count: the least important
    # channels of every segment go, as many as the allocation chose on average.
    segments = unit.segments if unit.segments > 1 and unit.channels % unit.segments == 0 else 1
    if segments == 1:
        return pruned
    count = per_segment(int(pruned.sum()), unit.channels, segments)
    return balance(torch.zeros_like(pruned), unit.metric, segments, count)


def _as_blocks(unit: Unit) -> Unit:
    # A block of channels is ranked by its summed importance and counted as one "channel".
    if unit.block <= 1 or unit.channels % unit.block:
        return unit
    return replace(
        unit,
        metric=unit.metric.reshape(-1, unit.block).sum(dim=1),
        cost=unit.cost * unit.block,
        block=1,
    )


def _allocate(units: list[Unit]) -> list[torch.Tensor]:
    result: list[torch.Tensor | None] = [None] * len(units)
    by_global: dict[str, list[int]] = {}
    for i, unit in enumerate(units):
        if unit.global_group_id is None:
            low, high = unit.bounds()
            k = min(max(prune_count(unit.sparse_ratio, unit.channels), low), high)
            result[i] = _lowest(unit.metric, k)
        else:
            by_global.setdefault(unit.global_group_id, []).append(i)
    for members in by_global.values():
        for i, pruned in zip(members, _allocate_global([units[i] for i in members]), strict=True):
            result[i] = pruned
    return [r for r in result if r is not None]


def _allocate_global(units: list[Unit]) -> list[torch.Tensor]:
    total = sum(u.cost * u.channels for u in units)
    budget = int(units[0].sparse_ratio * total + _EPS)
    bounds = [u.bounds() for u in units]
    counts = [low for low, _ in bounds]
    spent = sum(c * u.cost for c, u in zip(counts, units, strict=True))

    # Candidates beyond each unit's floor, by importance relative to the unit's mean.
    candidates: list[tuple[float, int, int]] = []
    orders: list[torch.Tensor] = []
    for ui, unit in enumerate(units):
        metric = unit.metric.detach().double().cpu()
        scale = metric.abs().mean().item() or 1.0
        order = torch.argsort(metric, stable=True)
        orders.append(order)
        for rank in range(counts[ui], bounds[ui][1]):
            candidates.append((metric[order[rank]].item() / scale, ui, rank))
    candidates.sort()
    for _, ui, rank in candidates:
        # ranks within a unit come in ascending order, so a unit's next candidate is always
        # its next-least-important channel
        if rank != counts[ui] or spent + units[ui].cost > budget:
            continue
        counts[ui] += 1
        spent += units[ui].cost
    out = []
    for unit, order, k in zip(units, orders, counts, strict=True):
        pruned = torch.zeros(unit.channels, dtype=torch.bool)
        pruned[order[:k]] = True
        out.append(pruned)
    return out
