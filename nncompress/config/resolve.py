"""Resolving a config_list against a model: which layer gets which pruning target.

NNI's precedence applies: entries are applied in order, a later entry replaces the target of a layer
an earlier one chose, and an ``exclude: True`` entry removes the layers it matches. Inside one entry
the selection is ``(op_names ∪ op_partial_names ∪ op_names_re, or every module) ∩ op_types``, minus
that entry's ``exclude_op_*`` keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from nncompress.config.entry import ConfigEntry
from nncompress.config.keys import DEFAULT_OP_TYPES
from nncompress.config.messages import did_you_mean, jsonable, where
from nncompress.config.parse import parse_config_list
from nncompress.config.selectors import check_layer_names, select_layers
from nncompress.errors import ConfigError, NoMatchError


class UnprunableLayerError(ConfigError):
    """A config names a layer that has no weight to prune (an activation, a pooling, a container)."""

    code = "layer_not_prunable"


@dataclass(frozen=True)
class LayerTarget:
    """What the config asks for one layer.

    Attributes:
        name: module name from ``model.named_modules()``.
        op_type: the module's class name, e.g. ``'Conv2d'``.
        weight_shape: shape of its ``weight``.
        sparse_ratio: fraction to prune; for a global group, the group's overall fraction.
        max_sparse_ratio: cap for this layer, if any.
        min_sparse_ratio: floor for this layer, if any.
        granularity: ``'default'``, ``'out_channel'``, ``'in_channel'`` or ``'element'``.
        global_group_id: layers with the same id are ranked together.
        dependency_group_id: layers with the same id prune the same indices.
        target_names: parameters to mask that the layer really has (``'bias'`` dropped when it is None).
        entry_index: the config_list entry that decided this target (the last one that matched).
    """

    name: str
    op_type: str
    weight_shape: tuple[int, ...]
    sparse_ratio: float
    max_sparse_ratio: float | None
    min_sparse_ratio: float | None
    granularity: str
    global_group_id: str | None
    dependency_group_id: str | None
    target_names: tuple[str, ...]
    entry_index: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        out = asdict(self)
        out["weight_shape"] = list(self.weight_shape)
        out["target_names"] = list(self.target_names)
        return out


@dataclass(frozen=True)
class ResolvedConfig:
    """The per-layer targets of a config on one model, in module order.

    Attributes:
        targets: layer name -> target, in ``named_modules()`` order.
        entries: the parsed config the targets came from.
    """

    targets: dict[str, LayerTarget]
    entries: tuple[ConfigEntry, ...] = field(default=())

    def global_groups(self) -> dict[str, list[LayerTarget]]:
        """Layers ranked together, by ``global_group_id`` (``total_sparsity`` entries included)."""
        return _group_by(self.targets.values(), "global_group_id")

    def dependency_groups(self) -> dict[str, list[LayerTarget]]:
        """Layers that must prune the same indices, by the user's ``dependency_group_id``."""
        return _group_by(self.targets.values(), "dependency_group_id")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view: targets, the groups by name, and the normalised config."""
        return {
            "targets": [t.to_dict() for t in self.targets.values()],
            "global_groups": {g: [t.name for t in ts] for g, ts in self.global_groups().items()},
            "dependency_groups": {g: [t.name for t in ts] for g, ts in self.dependency_groups().items()},
            "config": [e.to_dict() for e in self.entries],
        }


def resolve_config(
    model: nn.Module,
    config_list: object,
    *,
    default_op_types: tuple[str, ...] = DEFAULT_OP_TYPES,
) -> ResolvedConfig:
    """Applies a config_list to a model's layers without touching the model.

    Args:
        model: the model whose ``named_modules()`` the names refer to.
        config_list: a raw NNI-style config_list or the output of :func:`parse_config_list`.
        default_op_types: what the op type ``'default'`` stands for.

    Returns:
        The targets of every layer left to prune, in module order.

    Raises:
        ConfigError: the config itself is invalid (see :func:`parse_config_list`).
        UnknownLayerError: a name in ``op_names``/``exclude_op_names``/``max_sparsity_per_layer`` is not
            a module of the model; the message lists the nearest real names.
        UnprunableLayerError: ``op_names`` names a layer without a weight.
        NoMatchError: an entry matches no layer, or the whole config leaves nothing to prune.
    """
    entries = parse_config_list(config_list)
    modules = _ModelIndex(model)
    chosen: dict[str, LayerTarget] = {}
    for entry in entries:
        matched = _select(entry, modules, default_op_types)
        for name in matched:
            if entry.exclude:
                chosen.pop(name, None)
            else:
                chosen[name] = _target(entry, name, modules.by_name[name])
    if not chosen:
        raise NoMatchError(
            "config_list: leaves no layer to prune (every layer it selects is excluded by a later entry)",
            entry=None,
            key=None,
            value=None,
            expected="at least one layer selected and not excluded",
        )
    ordered = {name: chosen[name] for name in modules.by_name if name in chosen}
    resolved = ResolvedConfig(targets=ordered, entries=entries)
    _check_dependency_groups(resolved)
    return resolved


class _ModelIndex:
    """The model's named modules, their types, and which carry a weight."""

    def __init__(self, model: nn.Module) -> None:
        # The root ("") is the whole model; NNI never selects it, and neither do we.
        self.by_name: dict[str, nn.Module] = {n: m for n, m in model.named_modules() if n}
        self.type_of: dict[str, str] = {n: type(m).__name__ for n, m in self.by_name.items()}

    def has_weight(self, name: str) -> bool:
        # A Tensor rather than a Parameter: a parametrized (masked) weight is a computed Tensor.
        return isinstance(_weight(self.by_name[name]), torch.Tensor)

    def weighted_types(self) -> list[str]:
        return sorted({self.type_of[n] for n in self.by_name if self.has_weight(n)})

    def check_names(self, entry: ConfigEntry, key: str, names: tuple[str, ...]) -> None:
        check_layer_names(entry.index, key, names, self.by_name)


def _select(entry: ConfigEntry, modules: _ModelIndex, default_op_types: tuple[str, ...]) -> list[str]:
    """The weighted layers one entry matches, in module order."""
    modules.check_names(entry, "op_names", entry.op_names or ())
    modules.check_names(entry, "exclude_op_names", entry.exclude_op_names)
    capped = tuple(name for name, _ in entry.max_sparse_ratio_per_layer)
    modules.check_names(entry, "max_sparsity_per_layer", capped)

    names = select_layers(
        modules.type_of,
        op_names=entry.op_names,
        op_partial_names=entry.op_partial_names,
        op_names_re=entry.op_names_re,
        op_types=None if entry.op_types is None else _expand_types(entry.op_types, default_op_types),
        exclude_op_names=entry.exclude_op_names,
        exclude_op_names_re=entry.exclude_op_names_re,
        exclude_op_types=_expand_types(entry.exclude_op_types, default_op_types),
    )

    if not entry.exclude:
        for name in entry.op_names or ():
            if name in names and not modules.has_weight(name):
                raise UnprunableLayerError(
                    f"{where(entry.index, 'op_names')}: layer {name!r} is a {modules.type_of[name]}, which "
                    "has no weight to prune; name the layers with weights instead (types here: "
                    + ", ".join(modules.weighted_types())
                    + ")",
                    entry=entry.index,
                    key="op_names",
                    value=name,
                    expected="a layer with a weight parameter",
                )
    # Partial names, regexes and types may sweep in containers and activations: they are not
    # layers to prune, so they simply do not count as matches.
    matched = [n for n in modules.by_name if n in names and modules.has_weight(n)]
    if not matched:
        raise _no_match(entry, modules, default_op_types)
    for name, _cap in entry.max_sparse_ratio_per_layer:
        if name not in matched:
            raise ConfigError(
                f"{where(entry.index, 'max_sparsity_per_layer')}: caps layer {name!r}, which this entry "
                f"does not select (it selects: {', '.join(matched)})",
                entry=entry.index,
                key="max_sparsity_per_layer",
                value=name,
                expected="names of layers this entry selects",
            )
    return matched


def _expand_types(op_types: tuple[str, ...], default_op_types: tuple[str, ...]) -> set[str]:
    types = set(op_types)
    if "default" in types:
        types.discard("default")
        types.update(default_op_types)
    return types


def _no_match(entry: ConfigEntry, modules: _ModelIndex, default_op_types: tuple[str, ...]) -> NoMatchError:
    selectors = {
        key: list(value)
        for key in ("op_types", "op_names", "op_partial_names", "op_names_re")
        if (value := getattr(entry, key)) is not None
    }
    shown = ", ".join(f"{k}={v!r}" for k, v in selectors.items())
    weighted = modules.weighted_types()
    message = f"{entry.label}: matches no layer with a weight ({shown})"
    if entry.exclude_op_names or entry.exclude_op_types or entry.exclude_op_names_re:
        message += " after its exclude_op_* keys"
    message += f"; the model's layers with weights are of types {', '.join(weighted) or 'none'}"
    for op_type in entry.op_types or ():
        if op_type != "default" and op_type not in modules.type_of.values():
            hint = did_you_mean(op_type, weighted)
            if hint:
                message += f"; for op type {op_type!r} {hint}"
    return NoMatchError(
        message,
        entry=entry.index,
        key=None,
        value=jsonable(selectors),
        expected="selectors matching at least one layer with a weight",
        model_op_types=weighted,
    )


def _weight(module: nn.Module) -> object:
    # An LSTM/GRU keeps one weight per layer and direction; its hidden units are its output channels
    # and weight_ih_l0 (gate rows per unit) stands for the layer.
    return getattr(module, "weight", getattr(module, "weight_ih_l0", None))


def _target(entry: ConfigEntry, name: str, module: nn.Module) -> LayerTarget:
    # parse_config_list guarantees a ratio on every non-exclude entry, and _select only returns
    # layers whose weight is a tensor; the checks keep the types honest.
    weight = _weight(module)
    if entry.sparse_ratio is None or not isinstance(weight, torch.Tensor):
        raise ConfigError(f"{entry.label}: internal error: no sparsity or no weight for {name!r}")
    present = tuple(t for t in entry.target_names if isinstance(getattr(module, t, None), torch.Tensor))
    return LayerTarget(
        name=name,
        op_type=type(module).__name__,
        weight_shape=tuple(weight.shape),
        sparse_ratio=entry.sparse_ratio,
        max_sparse_ratio=entry.max_for(name),
        min_sparse_ratio=entry.min_sparse_ratio,
        granularity=entry.granularity,
        global_group_id=entry.global_group_id,
        dependency_group_id=entry.dependency_group_id,
        target_names=present,
        entry_index=entry.index,
    )


def _pruned_extent(target: LayerTarget) -> tuple[int, ...]:
    """The positions a mask chooses among: channels along the granularity's dim, else every weight."""
    if target.granularity == "in_channel" and len(target.weight_shape) > 1:
        return (target.weight_shape[1],)
    if target.granularity == "element":
        return target.weight_shape
    return (target.weight_shape[0],)


def _check_dependency_groups(resolved: ResolvedConfig) -> None:
    """Layers tied by a ``dependency_group_id`` prune the same positions, so they need as many."""
    for group_id, members in resolved.dependency_groups().items():
        extents = {t.name: _pruned_extent(t) for t in members}
        if len(set(extents.values())) > 1:
            first = members[0]
            sizes = ", ".join(f"{n} {'x'.join(map(str, e))}" for n, e in extents.items())
            raise ConfigError(
                f"{where(first.entry_index, 'dependency_group_id')}: group {group_id!r} ties layers "
                f"that do not have the same number of positions to prune ({sizes}); a dependency group "
                "prunes the same indices in every layer",
                entry=first.entry_index,
                key="dependency_group_id",
                value=group_id,
                expected="layers with equal channel counts",
                layers={n: list(e) for n, e in extents.items()},
            )


def _group_by(targets: Any, attr: str) -> dict[str, list[LayerTarget]]:
    groups: dict[str, list[LayerTarget]] = {}
    for target in targets:
        key = getattr(target, attr)
        if key is not None:
            groups.setdefault(key, []).append(target)
    return groups
