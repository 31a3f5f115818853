"""Fine-grained (unstructured) magnitude pruning: the smallest |w| of each targeted weight.

The masks zero single elements, so no shape changes: the speedup keeps them as sparsity.
Only ``weight`` is masked (a bias element has no fan-in to judge it by). With
``total_sparsity`` / ``global_group_id`` the magnitudes of all the group's layers are ranked together
(raw |w|, as NNI does), each layer capped by its ``max_sparse_ratio``.

Example:
    >>> model, masks = LevelPruner(net, [{"sparsity": 0.8, "op_types": ["default"]}]).compress()
    >>> float((masks["fc1"]["weight"] == 0).float().mean())
    0.8
"""

from __future__ import annotations

from typing import ClassVar

import torch

from nncompress.config import LayerTarget
from nncompress.pruners.base import Pruner
from nncompress.pruners.masks import Masks, get_param

__all__ = ["LevelPruner"]

_EPS = 1e-9


def _count(ratio: float | None, numel: int, default: float) -> int:
    r = default if ratio is None else ratio
    return max(0, min(int(r * numel + _EPS), numel))


def _smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.ones(values.numel(), dtype=torch.float32)
    if k > 0:
        order = torch.argsort(values.flatten().detach().double().cpu(), stable=True)
        mask[order[:k]] = 0.0
    return mask.reshape(values.shape)


class LevelPruner(Pruner):
    """Masks the smallest-magnitude elements of each targeted weight.

    Args:
        model: the model.
        config_list: an NNI-style config_list; ``granularity`` may be ``default`` or ``element``.
    """

    name = "level"
    granularities: ClassVar[tuple[str, ...]] = ("default", "element")
    default_granularity: ClassVar[str] = "element"

    def _calculate(self) -> Masks:
        masks: Masks = {}
        globals_: dict[str, list[LayerTarget]] = {}
        for t in self.config.targets.values():
            if t.global_group_id is not None:
                globals_.setdefault(t.global_group_id, []).append(t)
                continue
            w = self._weight(t)
            low = _count(t.min_sparse_ratio, w.numel(), 0.0)
            high = _count(t.max_sparse_ratio, w.numel(), 1.0)
            k = min(max(_count(t.sparse_ratio, w.numel(), 0.0), low), high)
            masks[t.name] = {"weight": _smallest(w.abs(), k).to(w.device)}
        for group in globals_.values():
            masks.update(self._global(group))
        return masks

    def _weight(self, t: LayerTarget) -> torch.Tensor:
        return get_param(self.model, t.name, "weight").detach()

    def _global(self, group: list[LayerTarget]) -> Masks:
        weights = [self._weight(t) for t in group]
        values = torch.cat([w.abs().flatten().double().cpu() for w in weights])
        layer = torch.cat([torch.full((w.numel(),), i) for i, w in enumerate(weights)])
        low = torch.tensor(
            [_count(t.min_sparse_ratio, w.numel(), 0.0) for t, w in zip(group, weights, strict=True)]
        )
        high = torch.tensor(
            [_count(t.max_sparse_ratio, w.numel(), 1.0) for t, w in zip(group, weights, strict=True)]
        )
        budget = int(group[0].sparse_ratio * values.numel() + _EPS)

        order = torch.argsort(values, stable=True)
        sorted_layer = layer[order]
        # rank of each sorted element within its own layer: the n-th smallest of that layer
        rank = torch.empty_like(sorted_layer)
        for i in range(len(weights)):
            where = sorted_layer == i
            rank[where] = torch.arange(int(where.sum()))
        forced = rank < low[sorted_layer]
        allowed = (rank < high[sorted_layer]) & ~forced
        left = max(budget - int(forced.sum()), 0)
        take = forced.clone()
        take[torch.nonzero(allowed).flatten()[:left]] = True

        flat = torch.ones(values.numel(), dtype=torch.float32)
        flat[order[take]] = 0.0
        masks: Masks = {}
        offset = 0
        for t, w in zip(group, weights, strict=True):
            masks[t.name] = {"weight": flat[offset : offset + w.numel()].reshape(w.shape).to(w.device)}
            offset += w.numel()
        return masks
