"""The preflight report: per layer, per coupled-channel group, and what the speedup cannot handle."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nncompress.inspection.table import render_report

__all__ = ["GroupReport", "Issue", "LayerReport", "PreflightReport"]


@dataclass(frozen=True)
class LayerReport:
    """One selected layer.

    Attributes:
        name: module name.
        op_type: class name.
        weight_shape: shape of its weight today.
        sparse_ratio: the target from the config (the group's overall ratio for a global group).
        granularity: the effective granularity: the config's, or the pruner's own for ``'default'``.
        structured: whether pruning removes channels (a shape change) rather than single weights.
        channels: output channels now.
        channels_after: output channels that would remain; ``None`` when a global ranking decides.
        group: id of the coupled-channel group in :attr:`PreflightReport.groups`, if traced.
        global_group_id: the config's global ranking group.
        dependency_group_id: the config's dependency group.
        entry_index: the config_list entry that decided this layer.
        notes: anything the user should know about this layer (coupling, why it is not pruned).
    """

    name: str
    op_type: str
    weight_shape: tuple[int, ...]
    sparse_ratio: float
    granularity: str
    structured: bool
    channels: int
    channels_after: int | None
    group: int | None
    global_group_id: str | None
    dependency_group_id: str | None
    entry_index: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupReport:
    """Output channels that are kept or removed together.

    Attributes:
        id: 1-based id, referenced by :attr:`LayerReport.group`.
        layers: the layers whose output channels these are (several when coupled by an add or concat).
        carried_by: other modules removed with the channels (norms, depthwise convs).
        channels: channels in the group now.
        channels_after: channels that would remain (``None`` when decided by a global ranking).
        selected: which of ``layers``/``carried_by`` the config selects.
        prunable: whether the channels may be pruned at all.
        reason: why not, when not prunable.
    """

    id: int
    layers: tuple[str, ...]
    carried_by: tuple[str, ...]
    channels: int
    channels_after: int | None
    selected: tuple[str, ...]
    prunable: bool
    reason: str | None = None

    @property
    def coupled(self) -> bool:
        """True when more than one layer produces these channels."""
        return len(self.layers) > 1


@dataclass(frozen=True)
class Issue:
    """Something in the model the pruning or the speedup cannot handle."""

    name: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class PreflightReport:
    """The result of :func:`preflight`.

    Attributes:
        model: the model's class name.
        pruner: the pruner the channel counts assume.
        layers: the selected layers, in module order.
        groups: coupled-channel groups that contain a selected layer or couple several layers.
        not_selected: layers with a weight that the config leaves alone.
        unsupported: ops the speedup cannot take channels through.
        warnings: config/model interactions worth a look (coupled layers outside the selection...).
        config: the normalised config (v3 terms).
        will_shrink: some selected layer would lose output channels (or a global ranking decides);
            False means the speedup would return a model no smaller than the input.
        blocked_by: for selected layers that keep every channel, ``"layer: why"``.
    """

    model: str
    pruner: str
    layers: tuple[LayerReport, ...]
    groups: tuple[GroupReport, ...]
    not_selected: tuple[str, ...]
    unsupported: tuple[Issue, ...]
    warnings: tuple[str, ...]
    config: tuple[dict[str, Any], ...]
    will_shrink: bool = True
    blocked_by: tuple[str, ...] = ()

    def layer(self, name: str) -> LayerReport:
        """Returns the report of layer ``name``.

        Raises:
            KeyError: the layer is not selected.
        """
        for report in self.layers:
            if report.name == name:
                return report
        raise KeyError(f"{name!r} is not selected (selected: {', '.join(r.name for r in self.layers)})")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists); the shape the HTTP API returns."""
        return _jsonable(asdict(self))

    def to_table(self) -> str:
        """A fixed-width text table for the terminal, followed by groups, unsupported ops and warnings."""
        return render_report(self)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
