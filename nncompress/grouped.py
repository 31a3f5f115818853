"""Grouped convolutions (ResNeXt, RegNet): channels pruned evenly per group, ``groups`` kept.

A conv with ``groups=G`` (not depthwise) stores its weight as ``(out, in / G, *k)``: output group ``g``
reads only input group ``g``. Removing channels is exact as long as every group keeps the same number
of input channels and the same number of output channels, so a channel group that a grouped conv
produces or reads is split into ``G`` equal contiguous *segments* and each segment loses the same
count. The channel graph (:mod:`nncompress.graph`) reads :func:`grouped_segments`; the allocation and the
speedup's removable channels go through :func:`per_segment` and :func:`balance`; Torch-Pruning's own
conv pruner keeps only the first group's columns when inputs go, so :class:`GroupedConvPruner`
replaces it for models that hold a grouped conv.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch_pruning as tp
from torch import nn

__all__ = [
    "GroupedConvPruner",
    "balance",
    "grouped_conv_pruners",
    "grouped_segments",
    "is_grouped",
    "per_segment",
]

_CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_grouped(module: nn.Module) -> bool:
    """A non-transposed conv with ``groups > 1`` that is not depthwise (``groups == out_channels``)."""
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and not module.transposed
        and 1 < module.groups != module.out_channels
    )


def grouped_segments(
    module: nn.Module,
    name: str,
    is_out: bool,
    idxs: Sequence[int],
    root_idxs: Sequence[int],
    channels: int,
) -> tuple[int, str | None]:
    """How many equal segments ``module`` imposes on a channel group, or why it cannot be pruned.

    Args:
        module: a layer of the group.
        name: its qualified name (for the reason).
        is_out: the group holds the layer's output channels (else its input channels).
        idxs: the layer's own channel positions in the group.
        root_idxs: the group channel each position moves with.
        channels: channels in the group.

    Returns:
        ``(segments, None)`` (1 for any layer that is not a grouped conv), or ``(1, reason)`` when the
        conv's groups do not line up with contiguous segments of the group's channels (e.g. after
        a concat that reorders them).
    """
    if not is_grouped(module):
        return 1, None
    conv = cast(nn.modules.conv._ConvNd, module)  # is_grouped: a conv
    groups = int(conv.groups)
    size = int(conv.out_channels if is_out else conv.in_channels)
    side = "output" if is_out else "input"
    aligned = len(idxs) == size == channels and all(
        p // (size // groups) == c // (channels // groups) for p, c in zip(idxs, root_idxs, strict=True)
    )
    if not aligned:
        return 1, (
            f"grouped convolution (groups={groups}): its {side} groups do not line up with these "
            "channels; exclude the layers that produce them"
        )
    return groups, None


def per_segment(pruned: int, channels: int, segments: int) -> int:
    """Channels each of ``segments`` loses when ``pruned`` of ``channels`` should go (one always stays)."""
    if segments <= 1:
        return pruned
    return max(0, min(pruned // segments, channels // segments - 1))


def balance(chosen: torch.Tensor, score: torch.Tensor, segments: int, count: int) -> torch.Tensor:
    """Picks ``count`` channels in every segment: the chosen ones first, then the lowest ``score``.

    Args:
        chosen: bool ``(channels,)``, channels preferred for removal.
        score: ``(channels,)``, lower goes first among equally chosen channels.
        segments: equal contiguous segments of the channels.
        count: channels to pick per segment.

    Returns:
        A bool ``(channels,)`` with exactly ``count`` True per segment.
    """
    if segments <= 1:
        return chosen
    out = torch.zeros_like(chosen)
    per = chosen.numel() // segments
    # chosen channels sort before the others; ties keep score order, then index order
    key = score.detach().double().cpu() - chosen.double() * (score.abs().max().item() * 4 + 1)
    for s in range(segments):
        order = torch.argsort(key[s * per : (s + 1) * per], stable=True)
        out[s * per + order[:count]] = True
    return out


class GroupedConvPruner(tp.pruner.function.ConvPruner):
    """Torch-Pruning's conv handler, with exact input pruning for grouped convs.

    Input channel ``c`` of a grouped conv is column ``c % (in / groups)`` of the rows of group
    ``c // (in / groups)``; when every group loses the same number of inputs each group's rows keep
    their own columns. Depthwise convs go to Torch-Pruning's depthwise handler, the rest to its
    plain one.
    """

    _depthwise = tp.pruner.function.DepthwiseConvPruner()

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        if _is_depthwise(layer):
            return self._depthwise.prune_out_channels(layer, idxs)
        return super().prune_out_channels(layer, idxs)

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        if _is_depthwise(layer):
            return self._depthwise.prune_in_channels(layer, idxs)
        if not is_grouped(layer):
            return super().prune_in_channels(layer, idxs)
        groups, size = int(layer.groups), int(layer.in_channels)  # type: ignore[arg-type]
        per_in, per_out = size // groups, int(layer.out_channels) // groups  # type: ignore[arg-type]
        gone = set(int(i) for i in idxs)
        keep = [
            [c % per_in for c in range(g * per_in, (g + 1) * per_in) if c not in gone] for g in range(groups)
        ]
        if len({len(k) for k in keep}) != 1:
            raise ValueError(
                f"grouped conv (groups={groups}): every group must lose the same number of inputs"
            )
        weight = cast(torch.Tensor, layer.weight).detach()
        rows = [
            weight[g * per_out : (g + 1) * per_out].index_select(1, torch.tensor(k, device=weight.device))
            for g, k in enumerate(keep)
        ]
        layer.weight = nn.Parameter(
            torch.cat(rows), requires_grad=cast(torch.Tensor, layer.weight).requires_grad
        )
        layer.in_channels = size - len(gone)  # type: ignore[assignment]
        return layer


def _is_depthwise(layer: nn.Module) -> bool:
    conv = cast(nn.modules.conv._ConvNd, layer)  # registered for conv types only
    return conv.groups == conv.out_channels and conv.out_channels > 1


def grouped_conv_pruners(model: nn.Module) -> dict[type[nn.Module], tp.pruner.BasePruningFunc]:
    """:class:`GroupedConvPruner` for the conv types of ``model`` when it holds a grouped conv."""
    if not any(is_grouped(m) for m in model.modules()):
        return {}
    pruner = GroupedConvPruner()
    return {t: pruner for t in _CONV_TYPES if any(type(m) is t for m in model.modules())}
