"""Layers channel pruning cannot go through, named with the reason before anything runs (preflight)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nncompress.graph.channel_graph import ChannelGraph
from nncompress.graph.policy import ROOT_TYPES
from nncompress.graph.records import UnsupportedOp
from nncompress.graph.slices import NORM_TYPES
from nncompress.graph.trace import RECURRENT_TYPES, ExampleInputs, call, preserve_mode
from nncompress.layers import is_conv1d, is_rms_norm

__all__ = ["unsupported_ops"]

_KNOWN = (*ROOT_TYPES, *NORM_TYPES, nn.LayerNorm, nn.PReLU, *RECURRENT_TYPES)


def unsupported_ops(
    model: nn.Module, example_inputs: ExampleInputs, *, graph: ChannelGraph | None = None
) -> list[UnsupportedOp]:
    """Lists the layers that channel pruning cannot go through, with the reason.

    Found by running the model once with forward hooks, so only layers on the executed path are
    reported. A leaf layer with parameters of a type the dependency graph has no handler for is
    treated by Torch-Pruning as if channels passed through it unchanged, which is wrong for any
    layer that mixes channels.

    Args:
        model: the model (its train/eval mode is restored).
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        graph: the model's channel graph, when the caller has it; used only to tell which LSTM/GRU
            layers keep their hidden units (built when needed and not given).

    Returns:
        One entry per offending layer, in execution order. An LSTM/GRU appears only when its
        hidden units cannot be pruned, with the reason.

    Example:
        >>> unsupported_ops(gru_read_by_a_conv, tokens)
        [UnsupportedOp(name='rnn', op_type='GRU', reason='rnn: its hidden state goes through conv; ...')]
    """
    names = {m: n for n, m in model.named_modules()}
    seen: list[nn.Module] = []
    children_of_known = {
        c for m in model.modules() if isinstance(m, _KNOWN) for c in m.modules() if c is not m
    }

    def hook(module: nn.Module, _inputs: Any, _output: Any) -> None:
        if module not in seen:
            seen.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with preserve_mode(model), torch.no_grad():
            model.eval()
            call(model, example_inputs)
    finally:
        for h in handles:
            h.remove()

    recurrent = _recurrent_blockers(model, example_inputs, graph, seen)
    found: list[UnsupportedOp] = []
    for m in seen:
        name, kind = names[m], type(m).__name__
        if isinstance(m, RECURRENT_TYPES):
            if name in recurrent:
                reason = (
                    f"{recurrent[name]}; its hidden units keep their size, its input features follow "
                    "the layer before it"
                )
                found.append(UnsupportedOp(name, kind, reason))
        elif m in children_of_known or isinstance(m, _KNOWN) or is_conv1d(m) or is_rms_norm(m):
            continue
        elif any(True for _ in m.parameters(recurse=False)):
            reason = (
                f"no pruning handler for {kind}: the dependency graph assumes its channels pass through "
                "unchanged; exclude the layers around it or register a Torch-Pruning handler"
            )
            found.append(UnsupportedOp(name, kind, reason))
    return found


def _recurrent_blockers(
    model: nn.Module, example_inputs: ExampleInputs, graph: ChannelGraph | None, seen: list[nn.Module]
) -> dict[str, str]:
    """Why each executed LSTM/GRU keeps its hidden units (absent: they prune)."""
    if not any(isinstance(m, RECURRENT_TYPES) for m in seen):
        return {}
    if graph is None:
        graph = ChannelGraph.build(model, example_inputs)
    names = {m: n for n, m in model.named_modules()}
    rooted = {g.roots[0]: g for g in graph.groups if len(g.roots) == 1}
    blockers: dict[str, str] = {}
    for m in seen:
        if not isinstance(m, RECURRENT_TYPES):
            continue
        name = names[m]
        group = rooted.get(name)
        if group is None:  # plain nn.RNN, or a layer the trace did not reach
            blockers[name] = f"{type(m).__name__} hidden units are not pruned"
        elif not group.prunable:
            blockers[name] = "; ".join(group.blockers) or "its hidden state is an output of the model"
    return blockers
