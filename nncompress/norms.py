"""Norm layers whose width follows pruned channels: GroupNorm (whole groups) and FrozenBatchNorm2d.

Read by the one channel graph (:mod:`nncompress.graph`), so preflight's promise and the speedup's
result follow the same rules.

* ``nn.GroupNorm`` normalises each group of ``num_channels / num_groups`` channels over its own
  values. Removing a *whole* group leaves the statistics of the other groups unchanged, and a group
  whose input and affine parameters are zero outputs zeros, so the zero-masked model already computes
  what the shrunk one does. Only whole groups may go: channels are chosen in blocks of the group size
  and ``num_groups`` shrinks with them.
* torchvision's ``FrozenBatchNorm2d`` (detection backbones) keeps ``weight``, ``bias``,
  ``running_mean`` and ``running_var`` as *buffers*. Torch-Pruning has no handler for it and would
  pass channels straight through, leaving the buffers at their old size. It is recognised by duck
  typing (class name and four 1-D buffers) so the engine does not import torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch_pruning as tp
from torch import nn

from nncompress.errors import SpeedupError

__all__ = [
    "FROZEN_BN_BUFFERS",
    "FrozenBatchNormPruner",
    "WholeGroupNormPruner",
    "frozen_batch_norm_types",
    "group_norm_block",
    "is_frozen_batch_norm",
    "is_handled_norm",
    "norm_pruners",
    "norm_zero_channels",
]

FROZEN_BN_BUFFERS: tuple[str, ...] = ("weight", "bias", "running_mean", "running_var")


def is_frozen_batch_norm(module: nn.Module) -> bool:
    """True for a ``FrozenBatchNorm2d``-like layer: affine and statistics held as four 1-D buffers."""
    if "FrozenBatchNorm" not in type(module).__name__:
        return False
    buffers = dict(module.named_buffers(recurse=False))
    return all(isinstance(buffers.get(b), torch.Tensor) and buffers[b].dim() == 1 for b in FROZEN_BN_BUFFERS)


def frozen_batch_norm_types(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The FrozenBatchNorm classes used in ``model``."""
    return tuple(dict.fromkeys(type(m) for m in model.modules() if is_frozen_batch_norm(m)))


def _keep(total: int, removed: Sequence[int]) -> list[int]:
    dropped = {int(i) for i in removed}
    return [i for i in range(total) if i not in dropped]


class FrozenBatchNormPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning handler for ``FrozenBatchNorm2d``: its four buffers follow the channels."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = torch.as_tensor(_keep(int(cast(torch.Tensor, layer.weight).shape[0]), idxs), dtype=torch.long)
        for name in FROZEN_BN_BUFFERS:
            buffer = getattr(layer, name)
            setattr(layer, name, buffer.index_select(0, keep.to(buffer.device)).contiguous())
        if hasattr(layer, "num_features"):
            layer.num_features = len(keep)  # type: ignore[assignment]  # torch types Module.__setattr__ as Tensor | Module only
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(cast(torch.Tensor, layer.weight).shape[0])

    get_in_channels = get_out_channels


class WholeGroupNormPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning handler for ``nn.GroupNorm`` that removes whole groups and shrinks ``num_groups``.

    Torch-Pruning's own handler keeps ``num_groups``, so a group would end up with fewer channels
    (or the layer would fail when the count no longer divides); the channel graph only ever removes
    whole groups, and anything else is refused here rather than silently changing the statistics.
    """

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        assert isinstance(layer, nn.GroupNorm)
        size = layer.num_channels // layer.num_groups
        removed = sorted({int(i) for i in idxs})
        per_group: dict[int, int] = {}
        for i in removed:
            per_group[i // size] = per_group.get(i // size, 0) + 1
        partial = sorted(g for g, n in per_group.items() if n != size)
        if partial:
            raise SpeedupError(
                f"GroupNorm would lose part of group(s) {partial[:5]} ({size} channels per group); "
                "only whole groups can be removed without changing the statistics of the others",
                op_type="GroupNorm",
                channels_per_group=size,
            )
        keep = _keep(layer.num_channels, removed)
        if layer.affine:
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
            layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
        layer.num_channels = len(keep)
        layer.num_groups = len(keep) // size
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.num_channels)  # type: ignore[arg-type]

    get_in_channels = get_out_channels


def norm_pruners(model: nn.Module) -> dict[type[nn.Module], tp.pruner.BasePruningFunc]:
    """Handlers for the norm layers of ``model`` that Torch-Pruning's defaults get wrong."""
    handlers: dict[type[nn.Module], tp.pruner.BasePruningFunc] = {
        t: FrozenBatchNormPruner() for t in frozen_batch_norm_types(model)
    }
    group_norm = WholeGroupNormPruner()
    # GroupNorm subclasses (timm's GroupNormAct) are looked up by exact type.
    handlers.update({type(m): group_norm for m in model.modules() if isinstance(m, nn.GroupNorm)})
    return handlers


def group_norm_block(
    module: nn.GroupNorm, idxs: Sequence[int], chans: Sequence[int], channels: int
) -> tuple[int, str | None]:
    """Channels per block a GroupNorm imposes on a group of ``channels`` root channels.

    Args:
        module: the GroupNorm.
        idxs: the norm's channel positions in the group.
        chans: for each position, the group (root) channel it carries.
        channels: the group's channel count.

    Returns:
        ``(block, None)`` when removing whole root blocks of ``block`` channels removes whole norm
        groups, else ``(1, reason)`` with why the group cannot be pruned.
    """
    size = module.num_channels // module.num_groups
    if size == 1:
        return 1, None
    offsets = {int(i) - int(c) for i, c in zip(idxs, chans, strict=True)}
    if len(offsets) != 1 or next(iter(offsets)) % size or channels % size:
        return 1, (
            f"GroupNorm ({module.num_groups} groups of {size}) would lose part of a group: "
            "its groups do not line up with the channels of the layer producing them"
        )
    return size, None


@torch.no_grad()
def norm_zero_channels(module: nn.Module) -> torch.Tensor | None:
    """For each channel: does this norm output zero wherever its input is zero?

    Returns:
        A bool vector, or None when a zero input channel always gives a zero output (an
        affine-free GroupNorm over a whole zero group).

    Raises:
        TypeError: ``module`` is not a norm handled here.
    """
    if is_frozen_batch_norm(module):
        # x * w / sqrt(var + eps) + (b - mean * w / sqrt(var + eps)): zero when w and b are.
        return (cast(torch.Tensor, module.weight) == 0) & (cast(torch.Tensor, module.bias) == 0)
    if isinstance(module, nn.GroupNorm):
        return (module.weight == 0) & (module.bias == 0) if module.affine else None
    raise TypeError(f"{type(module).__name__} is not a norm handled by nncompress.norms")


def is_handled_norm(module: nn.Module) -> bool:
    """True for the norms :func:`norm_zero_channels` answers for."""
    return is_frozen_batch_norm(module) or isinstance(module, nn.GroupNorm)
