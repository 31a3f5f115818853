"""Network Slimming: rank channels by their BatchNorm scaling factors after sparsity training.

Liu et al. (ICCV 2017) train with an L1 penalty ``scale * sum(|gamma|)`` on the BatchNorm weights,
which drives the factors of useless channels towards zero, then prune the smallest ``|gamma|``.
Here the penalty is added as a gradient hook on the targeted BatchNorm weights (``+ scale *
sign(gamma)``), so it applies to nncompress's own training loop and to a user's training callable
alike. Targets may be the BatchNorm layers themselves (NNI's convention) or the conv/linear layers
they follow. ``training_epochs=0`` skips training and ranks the current factors.

Example:
    >>> pruner = SlimPruner(model, [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}],
    ...                     data=batches, criterion=F.cross_entropy, training_epochs=1)
    >>> model, masks = pruner.compress()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Unpack

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from nncompress.errors import ConfigError
from nncompress.graph import ChannelGroup
from nncompress.pruners.base import PrunerOptions
from nncompress.pruners.data import run_batches
from nncompress.pruners.datadriven import DataDrivenPruner
from nncompress.pruners.grouping import following_norm
from nncompress.pruners.masks import get_param

__all__ = ["SlimPruner"]

_BN = nn.modules.batchnorm._BatchNorm


class SlimPruner(DataDrivenPruner):
    """Prunes the channels whose BatchNorm scaling factor is smallest, after L1-penalised training.

    Args:
        model: the model (trained in place by the sparsity training).
        config_list: an NNI-style config_list; targets are BatchNorm layers or the layers they follow.
        data: ``(inputs, targets)`` batches, or a training callable ``(model) -> None``.
        criterion: the task loss for batches.
        training_epochs: passes over ``data`` (0: no training).
        scale: weight of the L1 penalty on the scaling factors (NNI's default 1e-4).
        optimizer: used for batches; default SGD(lr, momentum 0.9) over all parameters.
        lr: learning rate of the default optimizer.
        dummy_input: example inputs; by default the first batch's inputs are used.
        mode: ``"dependency_aware"`` (default) or ``"normal"``.
    """

    name = "slim"
    needs_criterion: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        config_list: Any,
        *,
        training_epochs: int = 1,
        scale: float = 1e-4,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float = 0.01,
        **options: Unpack[PrunerOptions],
    ) -> None:
        if training_epochs < 0:
            raise ConfigError("training_epochs must be >= 0", key="training_epochs", value=training_epochs)
        self.training_epochs = training_epochs
        self.scale = scale
        self.optimizer = optimizer
        self.lr = lr
        super().__init__(model, config_list, **options)
        self._norms = self._resolve_norms()

    def _data_required(self) -> bool:
        return self.training_epochs > 0  # ranking the current factors needs no data

    def _resolve_norms(self) -> list[str]:
        # The norms to penalise: targeted BatchNorms, and the one right after each targeted layer.
        # A group that turns out to have no BatchNorm at all fails when it is scored.
        norms: list[str] = []
        for name in self.config.targets:
            module = self.model.get_submodule(name)
            norm = name if isinstance(module, _BN) else following_norm(self.model, name)
            if norm is not None and self.model.get_submodule(norm).weight is not None:
                norms.append(norm)
        return list(dict.fromkeys(norms))

    def _install(self) -> list[RemovableHandle]:
        handles = []
        for norm in self._norms:
            gamma = get_param(self.model, norm, "weight")
            handles.append(gamma.register_hook(self._penalty(gamma)))
        return handles

    def _penalty(self, gamma: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def hook(grad: torch.Tensor) -> torch.Tensor:
            return grad + self.scale * torch.sign(gamma.detach())

        return hook

    def _run(self) -> None:
        if self.training_epochs == 0:
            return
        optimizer = self.optimizer or torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=0.9)
        with self._mode(train=True, drop_grads=True):
            run_batches(
                self.model,
                self.data,  # type: ignore[arg-type]
                criterion=self.criterion,
                backward=True,
                optimizer=optimizer,
                epochs=self.training_epochs,
            )

    def _finish(self) -> None:
        return None

    def _anchor_scores(self, group: ChannelGroup, anchor: str) -> torch.Tensor:
        """|gamma| of every BatchNorm carrying the group's channels, summed per channel."""
        out = torch.zeros(group.channels, dtype=torch.float64)
        found = False
        for s in group.members:
            if s.param != "weight" or not isinstance(self.model.get_submodule(s.module), _BN):
                continue
            gamma = get_param(self.model, s.module, "weight").detach().abs().double().cpu()
            out.index_add_(0, torch.tensor(s.channel), gamma[list(s.index)])
            found = True
        if not found:
            raise ConfigError(
                f"SlimPruner ranks channels by BatchNorm scaling factors, but the output channels of "
                f"{anchor} pass through no BatchNorm with affine weights; exclude {anchor} or use "
                "another pruner for it",
                layer=anchor,
                key="op_names",
            )
        return out
