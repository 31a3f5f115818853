"""What a masked LayerNorm / RMSNorm computes: the norm over the channels its masks keep.

A LayerNorm (or RMSNorm) normalises across the channels it reads, so zeroing some of them changes
the mean and variance the others see: a plainly zero-masked model is not what the shrunk model
computes. nncompress therefore *defines* the masked model's norm as the norm over the kept channels
only (zeros on the pruned ones): when masks are applied, each such norm whose ``weight`` (or
``bias``) mask prunes channels gets a forward hook that recomputes its output that way, and the
hook goes when the masks go. The speedup, which removes exactly those channels and shrinks
``weight``, ``bias`` and ``normalized_shape``, is then exact against it.

Handled: ``nn.LayerNorm`` over the last dimension and its channels-first subclasses (timm and
torchvision ``LayerNorm2d``, channels on dim 1), ``nn.RMSNorm`` and Llama-style RMSNorm
(``weight * x / sqrt(mean(x^2) + eps)``). Other layouts (a LayerNorm over several dimensions)
stay refused by the channel graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.layers import is_rms_norm

__all__ = [
    "attach_norm_masks",
    "detach_norm_masks",
    "is_width_norm",
    "norm_channel_dim",
    "width_norm_zero_channels",
]

_MARK = "_nncompress_kept_channels"


def is_width_norm(module: nn.Module) -> bool:
    """True for a norm whose width can shrink exactly: LayerNorm over one dimension, or an RMSNorm.

    The norm needs a per-channel ``weight``: the masks say which channels it keeps through it (an
    affine-free LayerNorm cannot be masked, so the channels it reads stay).
    """
    if isinstance(module, nn.LayerNorm):
        return len(module.normalized_shape) == 1 and module.weight is not None
    return is_rms_norm(module) and len(getattr(module, "normalized_shape", (0,))) == 1


@torch.no_grad()
def width_norm_zero_channels(module: nn.Module) -> torch.Tensor:
    """For each channel of a width norm: is its output zero (masked weight and bias) whatever the input?"""
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    if not isinstance(weight, torch.Tensor):  # no affine: a channel's output is never forced to zero
        size = module.normalized_shape[-1]  # type: ignore[index]
        return torch.zeros(int(size), dtype=torch.bool)
    zero = weight == 0
    return zero & (bias == 0) if isinstance(bias, torch.Tensor) else zero


def norm_channel_dim(module: nn.Module) -> int:
    """The input dimension holding the normalised channels (1 for channels-first ``LayerNorm2d``)."""
    return 1 if type(module).__name__.endswith("2d") else -1


def _kept(masks: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    kept: torch.Tensor | None = None
    for param in ("weight", "bias"):
        mask = masks.get(param)
        if isinstance(mask, torch.Tensor) and mask.dim() == 1:
            kept = (mask != 0) if kept is None else kept | (mask != 0)
    return kept


def attach_norm_masks(model: nn.Module, masks: Mapping[str, Mapping[str, torch.Tensor]]) -> nn.Module:
    """Makes each width norm whose masks prune channels normalise over the kept channels only.

    A norm named in ``masks`` loses the hook attached before, if any; norms whose masks keep every
    channel compute as usual.

    Args:
        model: the model, modified in place (forward hooks only; weights untouched).
        masks: ``{module name: {param name: mask}}``, as applied to the weights.

    Returns:
        ``model``.
    """
    modules = dict(model.named_modules())
    for name, params in masks.items():
        module = modules.get(name)
        if module is None or not is_width_norm(module):
            continue
        _remove_hooks(module)
        kept = _kept(params)
        if kept is None or bool(kept.all()):
            continue
        hook = _KeptChannelsHook(kept.detach().cpu())
        module.register_forward_hook(hook)
    return model


def detach_norm_masks(model: nn.Module) -> nn.Module:
    """Removes the hooks :func:`attach_norm_masks` added (copies made with ``deepcopy`` included)."""
    for module in model.modules():
        _remove_hooks(module)
    return model


def _remove_hooks(module: nn.Module) -> None:
    # Found by their mark rather than by handle: a deepcopy of the model carries the hooks along.
    hooks: Any = module._forward_hooks
    for key in [k for k, fn in hooks.items() if getattr(fn, _MARK, None) is not None]:
        del hooks[key]


class _KeptChannelsHook:
    """Forward hook: the norm's output recomputed over the kept channels, zeros elsewhere."""

    def __init__(self, kept: torch.Tensor) -> None:
        setattr(self, _MARK, kept)
        self.index = kept.nonzero().flatten()

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        dim = norm_channel_dim(module) % x.dim()
        index = self.index.to(x.device)
        part = x.index_select(dim, index).movedim(dim, -1)
        weight = getattr(module, "weight", None)
        bias = getattr(module, "bias", None)
        weight = weight.index_select(0, index) if weight is not None else None
        bias = bias.index_select(0, index) if bias is not None else None
        if isinstance(module, nn.LayerNorm):
            y = F.layer_norm(part, (len(index),), weight, bias, module.eps)
        else:
            y = _rms_norm(module, part, weight)
        out = torch.zeros_like(output)
        return out.index_copy(dim, index, y.movedim(-1, dim).to(output.dtype))


def _rms_norm(module: nn.Module, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if isinstance(module, nn.RMSNorm):
        return F.rms_norm(x, (x.shape[-1],), weight, module.eps)
    # Llama-style: statistics in float32, the scale applied in the input's dtype.
    eps = float(getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6)))
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    h = h.to(x.dtype)
    return h if weight is None else weight * h
