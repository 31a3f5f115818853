"""First-order Taylor channel pruning: the loss change a channel's removal would cause.

For a filter ``W_c`` with gradient ``G_c`` on one batch, removing it changes the loss by about
``(sum(W_c * G_c))**2`` (Molchanov et al., CVPR 2019); the scores are summed over the batches.
Gradients come from ``criterion`` on ``(inputs, targets)`` batches, or from whatever backward
passes a callable data source runs (the model's weights are only read; nothing is stepped unless
the callable steps).

Example:
    >>> pruner = TaylorFOWeightPruner(model, config_list, data=batches, criterion=F.cross_entropy)
    >>> model, masks = pruner.compress()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Unpack

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from nncompress.pruners.base import PrunerOptions
from nncompress.pruners.data import run_batches
from nncompress.pruners.datadriven import DataDrivenPruner, per_channel
from nncompress.pruners.importance import StatsImportance, primary_weight

__all__ = ["TaylorFOWeightPruner", "TaylorPruner"]


class TaylorFOWeightPruner(DataDrivenPruner):
    """Prunes the output channels with the smallest first-order Taylor importance.

    Args:
        model: the model.
        config_list: an NNI-style config_list.
        data: ``(inputs, targets)`` batches, or a callable ``(model) -> None`` that runs backward.
        criterion: the loss for batches, ``criterion(outputs, targets)``.
        training_steps: at most this many batches.
        dummy_input: example inputs; by default the first batch's inputs are used.
        mode: ``"dependency_aware"`` (default) or ``"normal"``.
    """

    name = "taylorfo"
    needs_criterion: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        config_list: Any,
        *,
        training_steps: int | None = None,
        **options: Unpack[PrunerOptions],
    ) -> None:
        super().__init__(model, config_list, **options)
        self.training_steps = training_steps
        self._scores: dict[str, torch.Tensor] = {}

    def _install(self) -> list[RemovableHandle]:
        self._scores = {}
        handles = []
        for name, module in self._target_modules().items():
            weight, dim = primary_weight(module)
            handles.append(weight.register_hook(self._hook(name, weight, dim)))
        return handles

    def _hook(self, name: str, weight: torch.Tensor, dim: int) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            contribution = per_channel((weight.detach() * grad).double(), dim) ** 2
            self._scores[name] = self._scores.get(name, 0) + contribution

        return hook

    def _run(self) -> None:
        # eval(): the gradients are wanted, not BatchNorm running statistics moved by this data
        with self._mode(train=False, drop_grads=True):
            run_batches(
                self.model,
                self.data,  # type: ignore[arg-type]
                criterion=self.criterion,
                backward=True,
                max_batches=self.training_steps,
            )

    def _finish(self) -> None:
        self.importance = StatsImportance(self._scores, "Taylor gradients")


TaylorPruner = TaylorFOWeightPruner
