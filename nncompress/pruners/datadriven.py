"""Shared life cycle of the pruners that rank channels from data (activations, gradients, BN scales).

The data runs once per :meth:`~nncompress.pruners.base.Pruner.compress`, with the pruner's hooks
installed; the first inputs the model sees are kept, so the coupled channels can be traced
without a ``dummy_input``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from nncompress.pruners.base import ChannelPruner
from nncompress.pruners.data import capture_inputs

__all__ = ["DataDrivenPruner"]


class DataDrivenPruner(ChannelPruner):
    """A channel pruner whose importance comes from running ``data`` through the model.

    Subclasses implement :meth:`_install` (register hooks, return their handles) and :meth:`_run`
    (feed the data), then set ``self.importance`` in :meth:`_finish`.
    """

    needs_data: ClassVar[bool] = True

    def _collect(self) -> Any:
        handles = self._install()
        try:
            with capture_inputs(self.model) as seen:
                self._run()
        finally:
            for h in handles:
                h.remove()
        self._finish()
        return seen[0] if seen else None

    def _install(self) -> list[RemovableHandle]:
        raise NotImplementedError

    def _run(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    @contextmanager
    def _mode(self, *, train: bool, drop_grads: bool = False) -> Iterator[None]:
        """Puts the model in train or eval mode while the data runs, then restores the caller's mode.

        Args:
            train: the mode to run in (eval when only activations or gradients are wanted, so
                BatchNorm's running statistics stay as they are).
            drop_grads: clear the gradients the run left, so none leak into the caller's training.
        """
        training = self.model.training
        self.model.train(train)
        try:
            yield
        finally:
            self.model.train(training)
            if drop_grads:
                self.model.zero_grad(set_to_none=True)

    def _target_modules(self) -> dict[str, nn.Module]:
        return {name: self.model.get_submodule(name) for name in self.config.targets}


def channel_dim(module: nn.Module) -> int:
    """The output dimension that indexes channels: 1 for conv/norm outputs (N, C, ...), else last."""
    conv_like = (
        nn.modules.conv._ConvNd,
        nn.modules.batchnorm._BatchNorm,
        nn.GroupNorm,
        nn.modules.instancenorm._InstanceNorm,
    )
    return 1 if isinstance(module, conv_like) else -1


def per_channel(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sums ``t`` over every dimension but ``dim``."""
    return t.movedim(dim, 0).reshape(t.shape[dim], -1).sum(dim=1)
