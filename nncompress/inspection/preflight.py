"""The preflight entry point: check the model runs, trace it once, and assemble the report."""

from __future__ import annotations

import torch
from torch import nn

from nncompress.config import LayerTarget, ResolvedConfig, resolve_config
from nncompress.errors import NncompressError, UnsupportedModelError
from nncompress.graph import ChannelGraph, ChannelGroup, ExampleInputs, unsupported_ops
from nncompress.inspection.channels import group_of_each_layer, group_report, layer_report
from nncompress.inspection.granularity import effective_granularity, resolve_pruner
from nncompress.inspection.report import GroupReport, Issue, LayerReport, PreflightReport

__all__ = ["ExampleInputError", "preflight"]


class ExampleInputError(NncompressError):
    """The model does not run on the example inputs given (wrong shape, dtype or arity)."""

    code = "invalid_example_input"


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
    pruner_key = resolve_pruner(pruner)
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


def _assemble(
    model: nn.Module,
    resolved: ResolvedConfig,
    groups: list[ChannelGroup],
    issues: list[Issue],
    warnings: list[str],
    pruner_key: str,
) -> PreflightReport:
    targets = resolved.targets
    structured = {n: effective_granularity(t, pruner_key) == "out_channel" for n, t in targets.items()}
    owner = group_of_each_layer(groups)

    # Groups worth showing: couplings (several producers), and the channels a selected layer prunes.
    # Fine-grained pruning leaves channels alone, so a lone layer's group says nothing there.
    kept: list[ChannelGroup] = [
        g for g in groups if len(g.roots) > 1 or any(owner.get(n) is g and structured[n] for n in targets)
    ]
    group_reports: list[GroupReport] = []
    group_after: dict[int, int | None] = {}
    for gid, group in enumerate(kept, start=1):
        report, messages = group_report(gid, group, targets, structured)
        group_reports.append(report)
        group_after[id(group)] = report.channels_after
        warnings.extend(messages)

    gid_of = {id(g): i for i, g in enumerate(kept, start=1)}
    layers: list[LayerReport] = []
    for name, target in targets.items():
        own = owner.get(name)
        layers.append(
            layer_report(
                target,
                effective_granularity(target, pruner_key),
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
