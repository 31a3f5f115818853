"""Channel importance: one-method objects that score the slices of a weight along a dimension.

An importance answers "how much does each output channel of ``layer`` matter?" as a tensor with one
score per slice of ``weight`` along ``dim`` (higher is more important). Weight-based scores read the
weight; data-driven ones return statistics they gathered under the layer's name while data ran.

Example:
    >>> L1Importance()("conv1", conv.weight, 0).shape
    torch.Size([20])
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = [
    "FPGMImportance",
    "Importance",
    "L1Importance",
    "L2Importance",
    "StatsImportance",
    "fpgm_scores",
    "norm_scores",
    "out_dim",
    "primary_weight",
]


@runtime_checkable
class Importance(Protocol):
    """Scores the slices of ``weight`` along ``dim``; higher means more important."""

    def __call__(self, layer: str, weight: torch.Tensor, dim: int) -> torch.Tensor: ...


def _rows(weight: torch.Tensor, dim: int) -> torch.Tensor:
    return weight.detach().movedim(dim, 0).reshape(weight.shape[dim], -1).double()


def norm_scores(weight: torch.Tensor, dim: int, p: float) -> torch.Tensor:
    """The ``p``-norm of each slice of ``weight`` along ``dim``."""
    return torch.linalg.vector_norm(_rows(weight, dim), ord=p, dim=1)


def fpgm_scores(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of Euclidean distances from each slice to all others (Filter Pruning via Geometric Median).

    A filter close to the geometric median of its layer is the one most replaceable by the others,
    so a *small* total distance means *less* important.
    """
    rows = _rows(weight, dim)
    return torch.cdist(rows, rows).sum(dim=1)


class L1Importance:
    """L1 norm of each filter (Li et al., Pruning Filters for Efficient ConvNets)."""

    def __call__(self, layer: str, weight: torch.Tensor, dim: int) -> torch.Tensor:
        return norm_scores(weight, dim, 1)


class L2Importance:
    """L2 norm of each filter."""

    def __call__(self, layer: str, weight: torch.Tensor, dim: int) -> torch.Tensor:
        return norm_scores(weight, dim, 2)


class FPGMImportance:
    """Distance of each filter to the others: small means close to the geometric median."""

    def __call__(self, layer: str, weight: torch.Tensor, dim: int) -> torch.Tensor:
        return fpgm_scores(weight, dim)


class StatsImportance:
    """Returns per-channel statistics gathered elsewhere, keyed by layer name.

    Args:
        stats: layer name -> one score per output channel.
        what: a phrase for error messages, e.g. ``"activation statistics"``.
    """

    def __init__(self, stats: dict[str, torch.Tensor], what: str) -> None:
        self.stats = stats
        self.what = what

    def __call__(self, layer: str, weight: torch.Tensor, dim: int) -> torch.Tensor:
        if layer not in self.stats:
            raise KeyError(f"no {self.what} were gathered for {layer!r}: it never ran on the data")
        scores = self.stats[layer].detach().double().cpu()
        if scores.numel() != weight.shape[dim]:
            raise ValueError(
                f"{self.what} for {layer!r} have {scores.numel()} channels, its weight {weight.shape[dim]}"
            )
        return scores


def out_dim(module: nn.Module) -> int:
    """The weight dimension that indexes ``module``'s output channels."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return 1 if module.transposed and module.groups == 1 else 0
    if isinstance(module, nn.Embedding):
        return 1
    if isinstance(module, nn.LayerNorm):
        return module.weight.dim() - 1 if module.weight is not None else 0
    return 0


def primary_weight(module: nn.Module) -> tuple[torch.Tensor, int]:
    """The tensor (and its dimension) whose slices are ``module``'s output channels.

    Raises:
        ValueError: ``module`` has no weight.
    """
    if isinstance(module, nn.MultiheadAttention):
        return module.out_proj.weight, 0
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"{type(module).__name__} has no weight to rank channels by")
    return weight, out_dim(module)
