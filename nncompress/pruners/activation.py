"""Activation-statistics channel pruners: APoZ (average percentage of zeros) and mean activation.

A forward hook reads each targeted layer's output after its activation: the output of the norm
right after the layer when there is one (conv -> BN -> ReLU), passed through ``activation``
(ReLU by default, as NNI does). A channel that is mostly zero (APoZ) or small on average (mean
rank) contributes little and is pruned first.

Example:
    >>> batches = [(x, y) for x, y in loader]
    >>> pruner = ActivationAPoZRankPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], data=batches)
    >>> model, masks = pruner.compress()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Unpack

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from nncompress.errors import ConfigError
from nncompress.pruners.base import PrunerOptions
from nncompress.pruners.data import run_batches
from nncompress.pruners.datadriven import DataDrivenPruner, channel_dim, per_channel
from nncompress.pruners.grouping import following_norm
from nncompress.pruners.importance import StatsImportance

__all__ = ["ACTIVATIONS", "ActivationAPoZRankPruner", "ActivationMeanRankPruner"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "relu6": F.relu6,
    "gelu": F.gelu,
    "silu": F.silu,
    "hardswish": F.hardswish,
    "identity": lambda t: t,
}


class _ActivationPruner(DataDrivenPruner):
    """Gathers per-channel statistics of activations; subclasses say which statistic."""

    def __init__(
        self,
        model: nn.Module,
        config_list: Any,
        *,
        activation: str = "relu",
        training_steps: int | None = None,
        **options: Unpack[PrunerOptions],
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}",
                key="activation",
                value=activation,
            )
        super().__init__(model, config_list, **options)
        self.activation = ACTIVATIONS[activation]
        self.training_steps = training_steps
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def _statistic(self, act: torch.Tensor, dim: int) -> torch.Tensor:
        raise NotImplementedError

    def _install(self) -> list[RemovableHandle]:
        self._sums, self._counts = {}, {}
        handles = []
        for name in self.config.targets:
            watched_name = following_norm(self.model, name) or name
            watched = self.model.get_submodule(watched_name)
            handles.append(watched.register_forward_hook(self._hook(name, channel_dim(watched))))
        return handles

    def _hook(self, name: str, dim: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, tuple):
                output = output[0]
            act = self.activation(output.detach()).double()
            stat = self._statistic(act, dim % act.dim())
            self._sums[name] = self._sums.get(name, 0) + stat
            self._counts[name] = self._counts.get(name, 0) + act.numel() // act.shape[dim]

        return hook

    def _run(self) -> None:
        with self._mode(train=False):
            run_batches(self.model, self.data, max_batches=self.training_steps)  # type: ignore[arg-type]

    def _finish(self) -> None:
        stats = {n: self._score(self._sums[n] / self._counts[n]) for n in self._sums}
        self.importance = StatsImportance(stats, "activation statistics")

    def _score(self, mean_stat: torch.Tensor) -> torch.Tensor:
        return mean_stat


class ActivationAPoZRankPruner(_ActivationPruner):
    """Prunes the channels whose activations are most often zero (Hu et al., Network Trimming).

    Args:
        model: the model.
        config_list: an NNI-style config_list.
        data: batches ``(inputs, targets)`` / ``inputs``, or a callable ``(model) -> None``.
        activation: applied to the watched output: relu (default), relu6, gelu, silu, hardswish, identity.
        training_steps: at most this many batches.
        dummy_input: example inputs; by default the first batch's inputs are used.
        mode: ``"dependency_aware"`` (default) or ``"normal"``.
    """

    name = "apoz"

    def _statistic(self, act: torch.Tensor, dim: int) -> torch.Tensor:
        return per_channel((act == 0).double(), dim)

    def _score(self, mean_stat: torch.Tensor) -> torch.Tensor:
        return 1.0 - mean_stat  # fewer zeros, more important


class ActivationMeanRankPruner(_ActivationPruner):
    """Prunes the channels with the smallest mean activation (Molchanov et al., 2017).

    Arguments as :class:`ActivationAPoZRankPruner`.
    """

    name = "mean_activation"

    def _statistic(self, act: torch.Tensor, dim: int) -> torch.Tensor:
        return per_channel(act, dim)
