"""The pruner life cycle, shared by every algorithm: resolve -> collect -> score -> allocate -> mask.

A pruner is built NNI's way, ``Pruner(model, config_list, **options)``, and
:meth:`Pruner.compress` returns ``(model, masks)`` with the masks applied through
``torch.nn.utils.parametrize``. Subclasses differ in two places only: what data they gather
(:meth:`Pruner._collect`) and how they score a channel (``importance``, or
:meth:`ChannelPruner._anchor_scores` for group-level criteria such as BatchNorm scales).

Channel pruners are dependency-aware: all output channels that a residual add, a concat or a
depthwise conv couples are one *unit* that takes one channel choice, ranked by the summed,
normalised importance of the unit's targeted layers; the unit prunes the *smallest* ratio among
them (so no targeted layer exceeds its target or cap). Its masks cover every member parameter of
a pruned channel (bias, BatchNorm affine parameters, depthwise filters...), so the masked model
computes what the physically smaller model computes.

The layer producing the model output (a classifier's logits) is never channel-pruned: a config that
reaches it is honoured for the other layers and the skip is recorded in :attr:`Pruner.warnings`;
if nothing else is left to prune, a :class:`~nncompress.errors.ConfigError` says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, TypedDict

import torch
from torch import nn

from nncompress.config import LayerTarget, ResolvedConfig, resolve_config
from nncompress.errors import ConfigError, NncompressError
from nncompress.graph import ChannelGraph, ChannelGroup
from nncompress.pruners.allocate import Unit, allocate
from nncompress.pruners.data import Criterion, DataSource, require_data
from nncompress.pruners.grouping import anchors_of, fallback_groups
from nncompress.pruners.importance import Importance, L1Importance
from nncompress.pruners.masks import Masks, apply_masks, get_param, is_masked, remove_masks

__all__ = ["ChannelPruner", "Pruner", "PrunerOptions"]

_MODES = ("dependency_aware", "normal")


class PrunerOptions(TypedDict, total=False):
    """The keywords every pruner takes (see :class:`Pruner`); subclasses pass them on unchanged."""

    dummy_input: Any
    graph: ChannelGraph | None
    mode: str
    data: DataSource | None
    criterion: Criterion | None


class Pruner:
    """Base of all pruners: config resolution, the mask life cycle, parametrization.

    Args:
        model: the model to prune (masks are applied to it in place by :meth:`compress`).
        config_list: an NNI-style config_list (v2 or v3 keys).
        dummy_input: example inputs to trace coupled channels with (tensor, tuple or dict).
        graph: the model's channel graph, when the caller already built it on ``dummy_input``
            (preflight, a job), so the model is not traced again.
        mode: ``"dependency_aware"`` (default) or NNI's ``"normal"`` (each layer on its own).
        data: for data-driven pruners, batches or a callable ``(model) -> None``.
        criterion: ``loss = criterion(outputs, targets)``, for pruners that need gradients.

    Attributes:
        config: the resolved config (per-layer targets).
        warnings: what was skipped or assumed, in plain words.
    """

    # What a pruner class says about itself, read by the registry, the job spec and the scheduler
    # rather than restated there. ``name``: the registry name (set only on the classes listed in
    # nncompress.pruners.registry); ``granularities``: the config's ``granularity`` values it
    # accepts; ``default_granularity``: what ``'default'`` means for it (NNI: "the pruner decides").
    name: ClassVar[str] = "base"
    needs_data: ClassVar[bool] = False
    needs_criterion: ClassVar[bool] = False
    granularities: ClassVar[tuple[str, ...]] = ("default",)
    default_granularity: ClassVar[str]

    def __init__(
        self,
        model: nn.Module,
        config_list: Sequence[dict[str, Any]] | ResolvedConfig,
        *,
        dummy_input: Any = None,
        graph: ChannelGraph | None = None,
        mode: str = "dependency_aware",
        data: DataSource | None = None,
        criterion: Criterion | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ConfigError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}", key="mode")
        self.model = model
        self.config = (
            config_list if isinstance(config_list, ResolvedConfig) else resolve_config(model, config_list)
        )
        self.dummy_input = dummy_input
        self.graph = graph
        self.mode = mode
        self.data = data
        self.criterion = criterion
        self.warnings: list[str] = []
        self._masks: Masks | None = None
        self._check_granularity()
        if self._data_required():
            require_data(data, type(self).__name__, needs_criterion=self.needs_criterion, criterion=criterion)

    # -- life cycle ---------------------------------------------------------------------------

    def calculate_masks(self) -> Masks:
        """Computes the masks without applying them (data-driven pruners do run their data).

        Returns:
            ``{module name: {param name: mask}}``, float 1.0 keep / 0.0 prune.
        """
        if is_masked(self.model):
            remove_masks(self.model, leave_masked=False)  # rank the original weights again
        self.warnings = []
        self._masks = self._calculate()
        return self._masks

    def compress(self) -> tuple[nn.Module, Masks]:
        """Computes the masks and applies them to the model through parametrizations.

        Returns:
            ``(model, masks)``: the same model object, now computing with masked parameters.

        Example:
            >>> model, masks = L1NormPruner(net, [{"sparsity": 0.5, "op_types": ["Conv2d"]}]).compress()
        """
        masks = self.calculate_masks()
        apply_masks(self.model, masks)
        return self.model, masks

    def get_masks(self) -> Masks:
        """The masks of the last :meth:`compress` / :meth:`calculate_masks`.

        Raises:
            NncompressError: nothing was computed yet.
        """
        if self._masks is None:
            raise NncompressError("no masks yet: call compress() first", pruner=self.name)
        return self._masks

    def unwrap_model(self) -> nn.Module:
        """Removes the mask parametrizations; the masked values stay in the plain parameters.

        Returns:
            The model.
        """
        return remove_masks(self.model, leave_masked=True)

    # -- hooks for subclasses -------------------------------------------------------------------

    def _calculate(self) -> Masks:
        raise NotImplementedError

    def _data_required(self) -> bool:
        return self.needs_data

    def _check_granularity(self) -> None:
        for t in self.config.targets.values():
            if t.granularity not in self.granularities:
                raise ConfigError(
                    f"config_list[{t.entry_index}]: {type(self).__name__} does not support granularity "
                    f"{t.granularity!r} (layer {t.name}); allowed: {', '.join(self.granularities)}",
                    entry=t.entry_index,
                    key="granularity",
                    value=t.granularity,
                    expected=list(self.granularities),
                )


class ChannelPruner(Pruner):
    """Prunes whole output channels, one shared choice per coupled group.

    Subclasses set :attr:`importance` (or override :meth:`_anchor_scores`) and, when data-driven,
    :meth:`_collect`.
    """

    granularities: ClassVar[tuple[str, ...]] = ("default", "out_channel")
    default_granularity: ClassVar[str] = "out_channel"
    importance: Importance = L1Importance()

    def _collect(self) -> Any:
        """Runs the pruner's data; returns captured example inputs (or None)."""
        return None

    def _calculate(self) -> Masks:
        captured = self._collect()
        groups = self._groups(captured)
        units = self._units(groups)
        masks: Masks = {}
        for unit, pruned in zip(units, allocate(units), strict=True):
            self._write_masks(unit, pruned, masks)
        return masks

    # -- groups and units -----------------------------------------------------------------------

    def _groups(self, captured: Any) -> list[ChannelGroup]:
        inputs = self.dummy_input if self.dummy_input is not None else captured
        targets = list(self.config.targets)
        if self.mode == "normal" or inputs is None:
            if self.mode != "normal":
                self.warnings.append(
                    "no dummy_input: channels were ranked per layer (plus the BatchNorm right after "
                    "each), without checking residual adds, concats or the output layer"
                )
            return fallback_groups(self.model, targets)
        if self.graph is None or not self.graph.fits(self.model):
            self.graph = ChannelGraph.build(self.model, inputs)
        return list(self.graph.groups)

    def _units(self, groups: list[ChannelGroup]) -> list[Unit]:
        targets = self.config.targets
        units: list[Unit] = []
        reached: set[str] = set()
        for group in groups:
            anchors = anchors_of(group, targets)
            if not anchors:
                continue
            reached.update(anchors)
            if not group.prunable:
                self._skip(group, anchors)
                continue
            followers = [r for r in group.roots if r not in targets]
            if followers:
                self.warnings.append(
                    f"{', '.join(followers)} not selected by the config but share output channels with "
                    f"{', '.join(anchors)}: they follow the same channel choice"
                )
            units.append(self._unit((group,), anchors))
        for name in targets:
            if name not in reached:
                self.warnings.append(f"{name}: no prunable output channels on the traced path; skipped")
        units = self._merge_user_groups(units)
        if not units:
            raise ConfigError(
                "nothing left to prune: " + "; ".join(self.warnings),
                key="op_names",
                warnings=list(self.warnings),
            )
        return units

    def _skip(self, group: ChannelGroup, anchors: list[str]) -> None:
        if group.feeds_output:
            self.warnings.append(
                f"{', '.join(anchors)}: its output channels are the model's output (e.g. the classes of "
                "a classifier), so they are never pruned; exclude it from the config to silence this"
            )
        elif not group.roots:
            self.warnings.append(f"{', '.join(anchors)}: no conv/linear produces these channels; skipped")
        else:
            self.warnings.append(f"{', '.join(anchors)}: not prunable ({'; '.join(group.blockers)})")

    def _unit(self, groups: tuple[ChannelGroup, ...], anchors: list[str]) -> Unit:
        group = groups[0]
        ts: list[LayerTarget] = [self.config.targets[a] for a in anchors]
        metric = torch.zeros(group.channels, dtype=torch.float64)
        cost = 0
        for anchor in anchors:
            scores = self._anchor_scores(group, anchor)
            mean = scores.abs().mean().item()
            metric += scores / mean if mean > 0 else scores
            s = group.root_slice(anchor)
            weight = get_param(self.model, s.module, s.param)
            cost += weight.numel() // weight.shape[s.dim] * len(s.index) // max(group.channels, 1)
        maxes = [t.max_sparse_ratio for t in ts if t.max_sparse_ratio is not None]
        mins = [t.min_sparse_ratio for t in ts if t.min_sparse_ratio is not None]
        return Unit(
            groups=groups,
            anchors=tuple(anchors),
            metric=metric,
            sparse_ratio=min(t.sparse_ratio for t in ts),
            min_ratio=max(mins) if mins else None,
            max_ratio=min(maxes) if maxes else None,
            global_group_id=next((t.global_group_id for t in ts if t.global_group_id is not None), None),
            cost=max(cost, 1),
            block=group.block,
            segments=group.segments,
        )

    def _anchor_scores(self, group: ChannelGroup, anchor: str) -> torch.Tensor:
        """Importance of each group channel according to one targeted layer."""
        s = group.root_slice(anchor)
        weight = get_param(self.model, s.module, s.param)
        scores = self.importance(anchor, weight, s.dim).detach().double().cpu()
        out = torch.zeros(group.channels, dtype=torch.float64)
        return out.index_add_(0, torch.tensor(s.channel), scores[list(s.index)])

    def _merge_user_groups(self, units: list[Unit]) -> list[Unit]:
        by_id: dict[str, list[int]] = {}
        for i, unit in enumerate(units):
            ids = {self.config.targets[a].dependency_group_id for a in unit.anchors} - {None}
            for gid in ids:
                by_id.setdefault(gid, []).append(i)  # type: ignore[arg-type]
        if not by_id:
            return units
        merged_away: set[int] = set()
        out: list[Unit] = []
        for gid, idx in by_id.items():
            idx = [i for i in dict.fromkeys(idx) if i not in merged_away]
            if len(idx) < 2:
                continue
            parts = [units[i] for i in idx]
            sizes = {u.channels for u in parts}
            if len(sizes) > 1:
                raise ConfigError(
                    f"dependency_group_id {gid!r} ties layers with different channel counts "
                    f"({', '.join(f'{a}: {u.channels}' for u in parts for a in u.anchors)}); "
                    "they cannot share one channel choice",
                    key="dependency_group_id",
                    value=gid,
                )
            metric = sum((u.metric / (u.metric.abs().mean() or 1.0) for u in parts), torch.zeros(1))
            first = parts[0]
            out.append(
                Unit(
                    groups=tuple(g for u in parts for g in u.groups),
                    anchors=tuple(a for u in parts for a in u.anchors),
                    metric=metric,
                    sparse_ratio=min(u.sparse_ratio for u in parts),
                    min_ratio=first.min_ratio,
                    max_ratio=min((u.max_ratio for u in parts if u.max_ratio is not None), default=None),
                    global_group_id=first.global_group_id,
                    cost=sum(u.cost for u in parts),
                    block=math.lcm(*(u.block for u in parts)),
                    segments=math.lcm(*(u.segments for u in parts)),
                )
            )
            merged_away.update(idx)
        return [u for i, u in enumerate(units) if i not in merged_away] + out

    # -- masks ----------------------------------------------------------------------------------

    def _write_masks(self, unit: Unit, pruned: torch.Tensor, masks: Masks) -> None:
        pruned_channels = set(torch.nonzero(pruned).flatten().tolist())
        for group in unit.groups:
            for s in group.members:
                param = get_param(self.model, s.module, s.param)
                per_module = masks.setdefault(s.module, {})
                if s.param not in per_module:
                    per_module[s.param] = torch.ones_like(param, dtype=torch.float32)
                positions = s.positions(pruned_channels)
                if positions:
                    per_module[s.param].index_fill_(s.dim, torch.tensor(positions, device=param.device), 0.0)
