"""Masks as data, and applying them to a model through ``torch.nn.utils.parametrize``.

A mask set is ``{module name: {parameter name: mask}}``; each mask has its parameter's shape and
holds 1.0 (keep) or 0.0 (prune). Being plain tensors keyed by names, masks can be saved and applied
in another process (the speedup does exactly that).

Example:
    >>> apply_masks(model, {"conv1": {"weight": torch.zeros_like(model.conv1.weight)}})
    >>> model.conv1.weight.abs().sum()          # read through the parametrization
    tensor(0., grad_fn=<SumBackward0>)
    >>> remove_masks(model)                     # masked values stay, plain parameters again
    >>> bake_masks(model, masks)                # the same in one step: zeros in plain parameters
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from nncompress.errors import NncompressError
from nncompress.masked_norms import attach_norm_masks, detach_norm_masks

__all__ = [
    "MaskParametrization",
    "Masks",
    "apply_masks",
    "bake_masks",
    "get_param",
    "is_masked",
    "mask_sparsity",
    "remove_masks",
]

Masks = dict[str, dict[str, torch.Tensor]]


class MaskParametrization(nn.Module):
    """``weight -> weight * mask``; the mask is a buffer so it follows ``.to(device)``."""

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


def _check(model: nn.Module, masks: Masks) -> list[tuple[nn.Module, str, torch.Tensor]]:
    found = []
    for module_name, params in masks.items():
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            raise NncompressError(f"mask for unknown module {module_name!r}", module=module_name) from None
        for param_name, mask in params.items():
            value = getattr(module, param_name, None)
            if not isinstance(value, torch.Tensor):
                raise NncompressError(
                    f"mask for {module_name}.{param_name}, which is not a tensor of that module",
                    module=module_name,
                    param=param_name,
                )
            if tuple(mask.shape) != tuple(value.shape):
                raise NncompressError(
                    f"mask for {module_name}.{param_name} has shape {tuple(mask.shape)}, "
                    f"the parameter has {tuple(value.shape)}",
                    module=module_name,
                    param=param_name,
                    mask_shape=list(mask.shape),
                    param_shape=list(value.shape),
                )
            found.append((module, param_name, mask.to(device=value.device, dtype=value.dtype)))
    return found


def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Makes ``model`` compute with masked parameters, without changing its ``forward``.

    Every masked parameter becomes ``parametrize``d: reading ``module.weight`` returns
    ``original * mask``, gradients flow to the original. A LayerNorm or RMSNorm whose masks prune
    channels normalises over the kept channels only (see :mod:`nncompress.masked_norms`). Masks
    already applied are replaced. Either all masks are applied or none (shapes are checked first).

    Args:
        model: the model, modified in place.
        masks: ``{module name: {param name: mask}}``.

    Returns:
        ``model``.

    Raises:
        NncompressError: a mask names a missing module or parameter, or has the wrong shape.
    """
    for module, param_name, mask in _check(model, masks):
        if parametrize.is_parametrized(module, param_name):
            parametrize.remove_parametrizations(module, param_name, leave_parametrized=False)
        parametrize.register_parametrization(module, param_name, MaskParametrization(mask))
    # A LayerNorm/RMSNorm losing channels normalises over the kept ones (nncompress.masked_norms).
    attach_norm_masks(model, masks)
    return model


def remove_masks(model: nn.Module, *, leave_masked: bool = True) -> nn.Module:
    """Removes every mask parametrization from ``model``, and the masked norms' hooks.

    Args:
        model: the model, modified in place.
        leave_masked: keep the masked values (pruned entries become zeros in the plain parameter);
            ``False`` restores the original, unmasked values.

    Returns:
        ``model``.
    """
    _remove_parametrizations(model, leave_masked=leave_masked)
    return detach_norm_masks(model)


@torch.no_grad()
def bake_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Multiplies masks into the parameters for good: the masked model with plain parameters.

    :func:`apply_masks` followed by removing the parametrizations with the masked values kept, so
    the model computes exactly what the parametrized one does, without ``parametrize`` in the way
    (the speedup traces and shrinks it, and its reference outputs come from it). Any non-zero mask
    value means "keep". A LayerNorm or RMSNorm whose masks prune channels keeps normalising over
    the kept channels only: its forward hook (:mod:`nncompress.masked_norms`) stays.

    Args:
        model: a model without mask parametrizations (any are removed, masked values kept),
            modified in place.
        masks: ``{module name: {param name: mask}}``.

    Returns:
        ``model``.

    Raises:
        NncompressError: a mask names a missing module or parameter, or has the wrong shape.
    """
    binary = {name: {param: mask != 0 for param, mask in params.items()} for name, params in masks.items()}
    # Removing a parametrization registers the tensor again, last: restore each module's order, which
    # parameters(), state_dict() and the speedup's per-layer reports follow.
    order = [(m, list(m._parameters), list(m._buffers)) for m in model.modules()]
    apply_masks(model, binary)
    # Only the parametrizations go: the norm hooks apply_masks attached are the masked model's too.
    _remove_parametrizations(model, leave_masked=True)
    for module, params, buffers in order:
        _reorder(module._parameters, params)
        _reorder(module._buffers, buffers)
    return model


def _remove_parametrizations(model: nn.Module, *, leave_masked: bool) -> nn.Module:
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        plists: Any = module.parametrizations
        for param_name in list(plists.keys()):
            plist = plists[param_name]
            if all(isinstance(p, MaskParametrization) for p in plist):
                parametrize.remove_parametrizations(module, param_name, leave_parametrized=leave_masked)
    return model


def _reorder(tensors: dict[str, Any], names: list[str]) -> None:
    first = {name: tensors.pop(name) for name in names if name in tensors}
    rest = dict(tensors)
    tensors.clear()
    tensors.update(first)
    tensors.update(rest)


def get_param(model: nn.Module, module: str, param: str) -> torch.Tensor:
    """``model.<module>.<param>`` as a tensor.

    Raises:
        NncompressError: there is no such tensor.
    """
    value = getattr(model.get_submodule(module), param, None)
    if not isinstance(value, torch.Tensor):
        raise NncompressError(f"{module}.{param} is not a tensor", module=module, param=param)
    return value


def is_masked(model: nn.Module) -> bool:
    """True when some parameter of ``model`` is read through a mask parametrization."""
    return any(isinstance(m, MaskParametrization) for m in model.modules())


def mask_sparsity(mask: torch.Tensor) -> float:
    """Fraction of entries a mask prunes."""
    return float((mask == 0).sum().item()) / max(mask.numel(), 1)
