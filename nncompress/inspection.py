"""Preflight: what a config would do to a model, computed without pruning anything.

It resolves the config_list to layers, traces the model once to find which output channels are
coupled (residual adds, concats, depthwise convs, a conv and its BatchNorm), and reports per layer
the channels it has now and the channels that would remain, plus the layers and ops the speedup
cannot take through. The HTTP API returns :meth:`PreflightReport.to_dict`; ``nncompress inspect``
prints :meth:`PreflightReport.to_table`.

Example:
    >>> config = [{"sparsity_per_layer": 0.5, "op_types": ["Conv2d"]}]
    >>> report = preflight(Net(), config, torch.randn(1, 1, 28, 28))
    >>> [(r.name, r.channels, r.channels_after) for r in report.layers]
    [('conv1', 20, 10), ('conv2', 50, 25)]
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from nncompress.config import LayerTarget, ResolvedConfig, resolve_config
from nncompress.config.messages import did_you_mean
from nncompress.errors import ConfigError, NncompressError, UnsupportedModelError
from nncompress.graph import ChannelGraph, ChannelGroup, ExampleInputs, unsupported_ops
from nncompress.grouped import per_segment
from nncompress.tables import render_table

__all__ = [
    "ExampleInputError",
    "GroupReport",
    "Issue",
    "LayerReport",
    "PreflightReport",
    "kept_channels",
    "preflight",
]

# What granularity 'default' means for each pruner (NNI: "the pruner decides"). Level masks single
# weights; every other pruner here removes whole output channels. Scheduled pruners (linear, agp)
# iterate a channel pruner.
_PRUNER_GRANULARITY: dict[str, str] = {
    "level": "element",
    "l1norm": "out_channel",
    "l2norm": "out_channel",
    "fpgm": "out_channel",
    "slim": "out_channel",
    "taylorfo": "out_channel",
    "taylorfoweight": "out_channel",
    "taylor": "out_channel",
    "activationapozrank": "out_channel",
    "apoz": "out_channel",
    "activationmeanrank": "out_channel",
    "meanrank": "out_channel",
    "linear": "out_channel",
    "agp": "out_channel",
}


class ExampleInputError(NncompressError):
    """The model does not run on the example inputs given (wrong shape, dtype or arity)."""

    code = "invalid_example_input"


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
        return _render_table(self)


def kept_channels(channels: int, sparse_ratio: float) -> int:
    """How many of ``channels`` survive pruning ``sparse_ratio`` of them.

    The pruned count is rounded down (NNI truncates too) and at least one channel is kept, so a
    layer never disappears. A tiny epsilon absorbs float noise (``0.7 * 10`` is ``7.000000000000001``).

    Args:
        channels: channels before pruning.
        sparse_ratio: fraction to prune, in [0, 1).

    Returns:
        Channels after pruning, in ``[1, channels]``.
    """
    pruned = math.floor(sparse_ratio * channels + 1e-9)
    return max(1, channels - pruned)


def preflight(
    model: nn.Module,
    config_list: object,
    example_inputs: ExampleInputs,
    *,
    pruner: str = "l1norm",
    graph: ChannelGraph | None = None,
) -> PreflightReport:
    """Resolves ``config_list`` against ``model`` and reports what pruning would do, changing nothing.

    Args:
        model: the model; it is traced once in eval mode and left exactly as it was (weights,
            buffers, train/eval mode).
        config_list: an NNI v2/v3 config_list (see :func:`nncompress.config.parse_config_list`).
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        pruner: pruner name (``'l1norm'``, ``'level'``, ``'L1NormPruner'``...); decides what
            granularity ``'default'`` means.
        graph: the model's channel graph on ``example_inputs``, when the caller already built it
            (the same graph the pruner and the speedup then use); traced here otherwise.

    Returns:
        The report.

    Raises:
        ConfigError: the config is invalid, names unknown layers, or matches nothing; or the pruner
            name is unknown.
    """
    pruner_key = _pruner_key(pruner)
    resolved = resolve_config(model, config_list)
    issues: list[Issue] = []
    warnings: list[str] = []
    groups: list[ChannelGroup] = []
    was_training = model.training
    try:
        # eval(): a traced forward in train mode would update BatchNorm running statistics.
        model.eval()
        _check_runs(model, example_inputs)
        try:
            if graph is None or not graph.fits(model):
                graph = ChannelGraph.build(model, example_inputs)
            groups = list(graph.groups)
        except UnsupportedModelError as exc:
            issues.append(Issue(type(model).__name__, type(model).__name__, exc.message))
            warnings.append("coupled channels are unknown because the model could not be traced")
        else:
            found = unsupported_ops(model, example_inputs, graph=graph)
            issues.extend(Issue(u.name, u.op_type, u.reason) for u in found)
    finally:
        model.train(was_training)
    return _assemble(model, resolved, groups, issues, warnings, pruner_key)


def _check_runs(model: nn.Module, example_inputs: ExampleInputs) -> None:
    """A plain forward first, so wrong inputs are the caller's error, not an untraceable model."""
    try:
        with torch.no_grad():
            if isinstance(example_inputs, dict):
                model(**example_inputs)
            elif isinstance(example_inputs, (tuple, list)):
                model(*example_inputs)
            else:
                model(example_inputs)
    except Exception as exc:  # model code can raise anything on a wrong shape or dtype
        raise ExampleInputError(
            f"example_inputs: the model does not run on them ({_describe(example_inputs)}): "
            f"{type(exc).__name__}: {exc}",
            model=type(model).__name__,
            inputs=_describe(example_inputs),
        ) from exc


def _describe(example_inputs: ExampleInputs) -> str:
    def one(x: object) -> str:
        if isinstance(x, torch.Tensor):
            return f"{x.dtype} {tuple(x.shape)}".replace("torch.", "")
        return type(x).__name__

    if isinstance(example_inputs, dict):
        return ", ".join(f"{k}={one(v)}" for k, v in example_inputs.items())
    if isinstance(example_inputs, (tuple, list)):
        return ", ".join(one(x) for x in example_inputs)
    return one(example_inputs)


def _pruner_key(pruner: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", pruner.lower())
    key = key.removesuffix("pruner")
    if key not in _PRUNER_GRANULARITY:
        hint = did_you_mean(key, _PRUNER_GRANULARITY)
        raise ConfigError(
            f"pruner: unknown pruner {pruner!r}"
            + (f"; {hint}" if hint else "")
            + f" Known: {', '.join(_PRUNER_GRANULARITY)}",
            entry=None,
            key="pruner",
            value=pruner,
            expected="one of " + ", ".join(_PRUNER_GRANULARITY),
        )
    return key


def _assemble(
    model: nn.Module,
    resolved: ResolvedConfig,
    groups: list[ChannelGroup],
    issues: list[Issue],
    warnings: list[str],
    pruner_key: str,
) -> PreflightReport:
    targets = resolved.targets
    structured = {n: _granularity(t, pruner_key) == "out_channel" for n, t in targets.items()}
    owner = _group_of_each_layer(groups)

    # Groups worth showing: couplings (several producers), and the channels a selected layer prunes.
    # Fine-grained pruning leaves channels alone, so a lone layer's group says nothing there.
    kept: list[ChannelGroup] = [
        g for g in groups if len(g.roots) > 1 or any(owner.get(n) is g and structured[n] for n in targets)
    ]
    group_reports: list[GroupReport] = []
    group_after: dict[int, int | None] = {}
    for gid, group in enumerate(kept, start=1):
        report, messages = _group_report(gid, group, targets, structured)
        group_reports.append(report)
        group_after[id(group)] = report.channels_after
        warnings.extend(messages)

    gid_of = {id(g): i for i, g in enumerate(kept, start=1)}
    layers: list[LayerReport] = []
    for name, target in targets.items():
        own = owner.get(name)
        layers.append(
            _layer_report(
                target,
                _granularity(target, pruner_key),
                structured[name],
                own,
                gid_of.get(id(own)) if own is not None else None,
                group_after.get(id(own)) if own is not None else None,
                traced=bool(groups),
            )
        )

    weighted = [
        n for n, m in model.named_modules() if n and isinstance(getattr(m, "weight", None), torch.Tensor)
    ]
    shrinking = [
        r for r in layers if r.structured and (r.channels_after is None or r.channels_after < r.channels)
    ]
    blocked_by = [
        f"{r.name}: {'; '.join(r.notes) or 'keeps every channel'}"
        for r in layers
        if r.structured and r.channels_after == r.channels
    ]
    if not shrinking:
        warnings.append(
            "no selected layer loses an output channel: the speedup would return a model no smaller "
            "than the input (see blocked_by)"
        )
    return PreflightReport(
        model=type(model).__name__,
        pruner=pruner_key,
        layers=tuple(layers),
        groups=tuple(group_reports),
        not_selected=tuple(n for n in weighted if n not in targets and not _inside_selected(n, targets)),
        unsupported=tuple(issues),
        warnings=tuple(dict.fromkeys(warnings)),
        config=tuple(e.to_dict() for e in resolved.entries),
        will_shrink=bool(shrinking),
        blocked_by=tuple(blocked_by),
    )


def _inside_selected(name: str, targets: dict[str, LayerTarget]) -> bool:
    # An attention's out_proj is part of the attention layer, not a separate choice.
    return any(name.startswith(t + ".") for t in targets)


def _granularity(target: LayerTarget, pruner_key: str) -> str:
    return _PRUNER_GRANULARITY[pruner_key] if target.granularity == "default" else target.granularity


def _group_of_each_layer(groups: list[ChannelGroup]) -> dict[str, ChannelGroup]:
    """Maps each module to the group its output channels belong to (roots first, then carriers)."""
    owner: dict[str, ChannelGroup] = {}
    for group in groups:
        for root in group.roots:
            owner.setdefault(root, group)
    for group in groups:
        for piece in group.members:
            # Only output-side slices: a depthwise conv or a norm carries the channels it sits on.
            if piece.param == "weight" and piece.dim == 0:
                owner.setdefault(piece.module, group)
    return owner


def _group_report(
    gid: int,
    group: ChannelGroup,
    targets: dict[str, LayerTarget],
    structured: dict[str, bool],
) -> tuple[GroupReport, list[str]]:
    modules = list(dict.fromkeys([*group.roots, *(s.module for s in group.members)]))
    carried = tuple(m for m in modules if m not in group.roots)
    selected = tuple(m for m in modules if m in targets)
    deciders = [targets[m] for m in selected if structured[m]]
    messages: list[str] = []
    reason = None
    if not group.prunable:
        reason = "; ".join(group.blockers) if group.blockers else "its channels are the model's output"
    after: int | None = group.channels
    if group.prunable and deciders:
        if any(t.global_group_id is not None for t in deciders):
            after = None
        else:
            ratios = sorted({t.sparse_ratio for t in deciders})
            # One channel choice serves every layer of the group; the smallest ratio keeps every
            # layer at or under what the config asked for it.
            # Attention heads go whole: the ratio counts heads, as the pruner's allocation does.
            block = group.block if group.block > 1 and group.channels % group.block == 0 else 1
            after = kept_channels(group.channels // block, ratios[0]) * block
            if group.segments > 1:  # a grouped conv's groups each lose the same count
                units, segs = group.channels // block, group.segments
                gone = per_segment(units - kept_channels(units, ratios[0]), units, segs) * segs
                after = (units - gone) * block
            if len(ratios) > 1:
                messages.append(
                    f"group #{gid} ({', '.join(group.roots)}) shares one channel choice but the config asks "
                    f"{', '.join(f'{r:g}' for r in ratios)}; {ratios[0]:g} applies to all of them"
                )
        left_out = [r for r in group.roots if r not in targets]
        # A lone producer is expected to follow its norm (SlimPruner selects only the norms); only a
        # coupling the user may not know about is worth a warning.
        if left_out and len(group.roots) > 1:
            messages.append(
                f"group #{gid}: pruning {', '.join(m for m in selected)} also removes the same channels "
                f"from {', '.join(left_out)} (coupled by an add, a concat or a shared consumer)"
            )
    report = GroupReport(
        id=gid,
        layers=group.roots,
        carried_by=carried,
        channels=group.channels,
        channels_after=after,
        selected=selected,
        prunable=group.prunable,
        reason=reason,
    )
    return report, messages


def _layer_report(
    target: LayerTarget,
    granularity: str,
    structured: bool,
    group: ChannelGroup | None,
    gid: int | None,
    group_after: int | None,
    *,
    traced: bool,
) -> LayerReport:
    channels = group.channels if group is not None else _out_channels(target)
    # A fused q/k/v projection has three rows per group channel: report the layer's own count.
    per_channel = _rows_per_channel(group, target.name)
    channels *= per_channel
    if group_after is not None:
        group_after *= per_channel
    notes: list[str] = []
    after: int | None = channels
    if not structured:
        notes.append(
            f"{granularity} granularity: weights are zeroed, output channels stay"
            if granularity != "in_channel"
            else "in_channel granularity: input channels are pruned, output channels stay"
        )
    elif group is None:
        if traced:
            notes.append("not reached by the example inputs; channels unknown to the dependency graph")
        after = kept_channels(channels, target.sparse_ratio) if target.global_group_id is None else None
    elif not group.prunable:
        reason = "; ".join(group.blockers) if group.blockers else "its channels are the model's output"
        notes.append(f"not pruned: {reason}")
        if target.op_type in _PLAIN_LAYERS:  # a kept group may be wider than the layer (GhostNet's concat)
            channels = after = _out_channels(target)
    else:
        after = group_after
        if len(group.roots) > 1 and target.name in group.roots:
            others = [r for r in group.roots if r != target.name]
            notes.append(f"coupled with {', '.join(others)}")
        if target.name not in group.roots:
            notes.append(f"channels follow {', '.join(group.roots)}")
    if structured and after is None:
        notes.append(f"channels decided by the global ranking of group {target.global_group_id!r}")
    return LayerReport(
        name=target.name,
        op_type=target.op_type,
        weight_shape=target.weight_shape,
        sparse_ratio=target.sparse_ratio,
        granularity=granularity,
        structured=structured,
        channels=channels,
        channels_after=after,
        group=gid,
        global_group_id=target.global_group_id,
        dependency_group_id=target.dependency_group_id,
        entry_index=target.entry_index,
        notes=tuple(notes),
    )


_PLAIN_LAYERS = frozenset({"Conv1d", "Conv2d", "Conv3d", "Linear"})


def _rows_per_channel(group: ChannelGroup | None, name: str) -> int:
    if group is None or name not in group.roots or group.channels == 0:
        return 1
    try:
        root = group.root_slice(name)
    except KeyError:
        return 1
    # A recurrent layer's root slice is weight_ih_l0 (gates x units rows); its channels are units.
    if root.param != "weight":
        return 1
    return max(1, len(root.index) // group.channels)


def _out_channels(target: LayerTarget) -> int:
    # Without a traced group: a transposed conv stores (in, out / groups, ...), an embedding
    # (num, dim); everything else keeps output channels in dim 0.
    if target.op_type.startswith("ConvTranspose") and len(target.weight_shape) > 1:
        return target.weight_shape[1]
    if target.op_type == "Embedding":
        return target.weight_shape[1]
    return target.weight_shape[0]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _render_table(report: PreflightReport) -> str:
    header = ("layer", "type", "weight shape", "sparsity", "channels", "group")
    rows = [header]
    for layer in report.layers:
        after = "ranked" if layer.channels_after is None else str(layer.channels_after)
        channels = f"{layer.channels}→{after}" if layer.structured else f"{layer.channels} (kept)"
        group = "-" if layer.group is None else f"#{layer.group}"
        sparsity = f"{layer.sparse_ratio:.2f}" + ("" if layer.structured else f" {layer.granularity}")
        shape = "x".join(str(d) for d in layer.weight_shape)
        rows.append((layer.name, layer.op_type, shape, sparsity, channels, group))
    lines = render_table(rows).splitlines()
    lines.append("")
    lines.append(f"pruner: {report.pruner}; not selected: {', '.join(report.not_selected) or 'none'}")
    if report.groups:
        lines.append("")
        lines.append("channel groups:")
        for g in report.groups:
            after = "ranked" if g.channels_after is None else str(g.channels_after)
            text = (
                f"  #{g.id}  {', '.join(g.layers) or '(no producing layer)'}: {g.channels}→{after} channels"
            )
            if g.coupled:
                text += " (coupled)"
            if g.carried_by:
                text += f"; carried by {', '.join(g.carried_by)}"
            if not g.prunable:
                text += f"; not prunable: {g.reason}"
            lines.append(text)
    for title, items in (
        ("unsupported:", [f"  {i.name} ({i.op_type}): {i.reason}" for i in report.unsupported]),
        ("notes:", [f"  {layer.name}: {n}" for layer in report.layers for n in layer.notes]),
        ("warnings:", [f"  {w}" for w in report.warnings]),
    ):
        if items:
            lines.extend(["", title, *items])
    return "\n".join(lines)
