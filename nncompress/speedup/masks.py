"""Masks: loading, validation, and the sparsity they leave.

Applying them is :func:`nncompress.pruners.masks.bake_masks` (the masked reference model).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from nncompress.errors import SpeedupError
from nncompress.pruners.masks import Masks


def load_masks(masks_or_path: Mapping[str, Mapping[str, torch.Tensor]] | str | Path) -> Masks:
    """Returns masks given as a dict, or loads them from a ``torch.save`` file without unpickling code.

    Args:
        masks_or_path: ``{module_name: {param_name: mask}}`` or a ``torch.save`` file of such a dict.

    Returns:
        A plain dict of dicts of tensors.
    """
    if isinstance(masks_or_path, str | Path):
        try:
            loaded = torch.load(masks_or_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt or unsafe files
            raise SpeedupError(
                f"could not load masks from {str(masks_or_path)!r}: {exc}", path=str(masks_or_path)
            ) from exc
        if not isinstance(loaded, Mapping):
            raise SpeedupError(
                "a masks file must hold a dict {module_name: {param_name: mask}}", path=str(masks_or_path)
            )
        masks_or_path = loaded
    return {str(name): dict(params) for name, params in masks_or_path.items()}


def validate_masks(model: nn.Module, masks: Masks) -> None:
    """Raises SpeedupError when a mask names a missing module/parameter or has the wrong shape."""
    modules = dict(model.named_modules())
    for name, params in masks.items():
        module = modules.get(name)
        if module is None:
            near = sorted(n for n in modules if n and (name in n or n in name))[:5]
            raise SpeedupError(
                f"masks name module {name!r}, which the model does not have", module=name, similar=near
            )
        # Buffers too: FrozenBatchNorm2d keeps its affine weight and bias as buffers.
        own = {**dict(module.named_buffers(recurse=False)), **dict(module.named_parameters(recurse=False))}
        for param_name, mask in params.items():
            if param_name not in own:
                raise SpeedupError(
                    f"masks name parameter {name}.{param_name}, which does not exist; it has {sorted(own)}",
                    module=name,
                    param=param_name,
                )
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(own[param_name].shape):
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise SpeedupError(
                    f"mask for {name}.{param_name} has shape {shape}, "
                    f"the parameter has {tuple(own[param_name].shape)}",
                    module=name,
                    param=param_name,
                )


def layer_sparsity(model: nn.Module, names: list[str]) -> dict[str, float]:
    """Fraction of zero weights left in each named module (element sparsity kept after the shape change)."""
    modules = dict(model.named_modules())
    out: dict[str, float] = {}
    for name in names:
        module = modules.get(name)
        if module is None:
            continue
        params = [p for p in module.parameters(recurse=False) if p.numel()]
        total = sum(p.numel() for p in params)
        if total:
            zeros = sum(int((p == 0).sum()) for p in params)
            out[name] = zeros / total
    return out
