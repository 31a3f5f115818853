"""The engine's own functional API: ``prune(model, config_list, pruner=...) -> PruneResult``.

Unlike the NNI-style classes, :func:`prune` leaves the model's forward untouched (no
parametrizations) and does not zero its weights; it returns the masks and a report. Only the
pruners that train (Slim) change the weights, as their algorithm requires.

Example:
    >>> result = prune(Net(), config_list, pruner="l1norm", example_inputs=torch.randn(1, 1, 28, 28))
    >>> result.layers["conv1"].kept_channels, result.layers["conv1"].channels
    (10, 20)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nncompress.config import ResolvedConfig
from nncompress.errors import ConfigError
from nncompress.graph import ChannelGraph
from nncompress.pruners.base import ChannelPruner
from nncompress.pruners.data import Criterion, DataSource
from nncompress.pruners.importance import primary_weight
from nncompress.pruners.masks import Masks, mask_sparsity
from nncompress.pruners.registry import get_pruner

__all__ = ["LayerReport", "PruneResult", "layer_reports", "prune"]


@dataclass(frozen=True)
class LayerReport:
    """What the masks do to one layer.

    Attributes:
        name: module name.
        op_type: module class name.
        sparsity: fraction of the layer's weight elements masked.
        channels: output channels before pruning (None for fine-grained masks).
        kept_channels: output channels left (None for fine-grained masks).
        target: the sparse ratio the config asked for (None for a layer that only follows).
    """

    name: str
    op_type: str
    sparsity: float
    channels: int | None = None
    kept_channels: int | None = None
    target: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PruneResult:
    """Masks plus what they achieved.

    Attributes:
        masks: ``{module name: {param name: mask}}``.
        layers: per masked layer, the sparsity reached.
        config: the resolved config.
        pruner: registry name of the pruner used.
        warnings: what was skipped or assumed.
    """

    masks: Masks
    layers: dict[str, LayerReport]
    config: ResolvedConfig
    pruner: str
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the masks themselves are left out)."""
        return {
            "pruner": self.pruner,
            "layers": [r.to_dict() for r in self.layers.values()],
            "config": self.config.to_dict(),
            "warnings": list(self.warnings),
        }


def layer_reports(
    model: nn.Module, masks: Masks, config: ResolvedConfig | None = None, *, channel_wise: bool = True
) -> dict[str, LayerReport]:
    """Per-layer sparsity of ``masks`` on ``model``, in module order.

    Args:
        model: the model the masks belong to.
        masks: the masks.
        config: the resolved config, to report each layer's target.
        channel_wise: the masks remove whole output channels (then kept channels are counted).
    """
    targets = config.targets if config is not None else {}
    reports: dict[str, LayerReport] = {}
    for name, module in model.named_modules():
        if name not in masks or "weight" not in masks[name]:
            continue
        mask = masks[name]["weight"]
        channels = kept = None
        if channel_wise and not isinstance(module, nn.MultiheadAttention):
            _, dim = primary_weight(module)
            rows = mask.movedim(dim, 0).reshape(mask.shape[dim], -1)
            channels, kept = int(rows.shape[0]), int((rows != 0).any(dim=1).sum())
        t = targets.get(name)
        reports[name] = LayerReport(
            name=name,
            op_type=type(module).__name__,
            sparsity=mask_sparsity(mask),
            channels=channels,
            kept_channels=kept,
            target=t.sparse_ratio if t is not None else None,
        )
    return reports


def prune(
    model: nn.Module,
    config_list: Sequence[dict[str, Any]] | ResolvedConfig,
    *,
    pruner: str = "l1norm",
    example_inputs: Any = None,
    graph: ChannelGraph | None = None,
    data: DataSource | None = None,
    criterion: Criterion | None = None,
    **options: Any,
) -> PruneResult:
    """Computes pruning masks for ``model``.

    Args:
        model: the model; not modified, except by the training of training pruners (slim).
        config_list: an NNI-style config_list, or an already resolved config.
        pruner: registry name: level, l1norm, l2norm, fpgm, slim, taylorfo, apoz, mean_activation.
        example_inputs: inputs to trace coupled channels with (strongly recommended).
        graph: the model's channel graph on ``example_inputs``, when the caller already built it.
        data: batches or a callable, for slim/taylorfo/apoz/mean_activation.
        criterion: the loss, for slim/taylorfo on batches.
        **options: pruner-specific keywords (``activation``, ``training_steps``, ``scale``...).

    Returns:
        A :class:`PruneResult`.

    Raises:
        ConfigError: invalid config, unknown pruner or option, missing data.
    """
    cls = get_pruner(pruner)
    kwargs: dict[str, Any] = dict(options)
    if example_inputs is not None:
        kwargs["dummy_input"] = example_inputs
    if graph is not None:
        kwargs["graph"] = graph
    if data is not None:
        kwargs["data"] = data
    if criterion is not None:
        kwargs["criterion"] = criterion
    try:
        instance = cls(model, config_list, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"pruner {pruner!r}: {exc}", key="options", pruner=pruner) from exc
    masks = instance.calculate_masks()
    return PruneResult(
        masks=masks,
        layers=layer_reports(model, masks, instance.config, channel_wise=isinstance(instance, ChannelPruner)),
        config=instance.config,
        pruner=pruner,
        warnings=tuple(instance.warnings),
    )
