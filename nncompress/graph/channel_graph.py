"""The channel graph of one model and input: traced once, read by pruners, preflight and speedup.

Example:
    >>> graph = ChannelGraph.build(model, torch.randn(1, 3, 224, 224))
    >>> masks = prune(model, config_list, example_inputs=x, graph=graph).masks   # no second trace
    >>> result = speedup(model, masks, x, graph=graph)                           # nor a third
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from nncompress.graph.groups import graph_groups
from nncompress.graph.records import ChannelGroup
from nncompress.graph.recurrent import recurrent_groups
from nncompress.graph.special import blocked_groups, fused_group
from nncompress.graph.trace import ExampleInputs, trace
from nncompress.layers import fused_attentions

__all__ = ["ChannelGraph", "channel_groups", "structure"]

Structure = tuple[tuple[str, str, tuple[tuple[str, tuple[int, ...]], ...]], ...]


def structure(model: nn.Module) -> Structure:
    """Module names, types and parameter shapes: what a graph's names and indices depend on."""
    return tuple(
        (name, type(m).__name__, tuple((p, tuple(t.shape)) for p, t in m.named_parameters(recurse=False)))
        for name, m in model.named_modules()
    )


@dataclass(frozen=True)
class ChannelGraph:
    """Every coupled channel group of a model, as plain data keyed by module and parameter names.

    It holds no reference to the model or to Torch-Pruning's graph, so it applies to any instance of
    the same architecture (a deep copy, the masked model, a fresh instance in another process).

    Attributes:
        groups: disjoint groups, in the order of their first root in ``model.named_modules()``.
        model_structure: :func:`structure` of the traced model, to check that the graph fits another.
    """

    groups: tuple[ChannelGroup, ...]
    model_structure: Structure

    @classmethod
    def build(cls, model: nn.Module, example_inputs: ExampleInputs) -> ChannelGraph:
        """Traces ``model`` once and reads its groups.

        Args:
            model: the model; run once under autograd, not modified (train/eval flags restored).
            example_inputs: a tensor, a sequence of positional inputs, or a dict of keyword inputs.

        Raises:
            UnsupportedModelError: the model cannot be traced, or its channels cannot be followed.
        """
        dg = trace(model, example_inputs)
        names = {m: n for n, m in model.named_modules()}
        order = {n: i for i, n in enumerate(names.values())}
        fused = {fa.fused: fa for fa in fused_attentions(model)}
        groups = [fused_group(model, fused[g.key]) if g.key in fused else g for g in graph_groups(dg, names)]
        groups += blocked_groups(model, names, {r for g in groups for r in g.roots})
        groups += recurrent_groups(dg)
        groups.sort(key=lambda g: min((order.get(r, 1 << 30) for r in g.roots), default=1 << 30))
        return cls(tuple(groups), structure(model))

    def fits(self, model: nn.Module) -> bool:
        """True when ``model`` has the traced model's layers and shapes (so names and indices apply)."""
        return structure(model) == self.model_structure

    def select(self, roots: Iterable[str] | None = None) -> list[ChannelGroup]:
        """The groups having at least one of ``roots`` as a root (all groups when None)."""
        if roots is None:
            return list(self.groups)
        wanted = set(roots)
        return [g for g in self.groups if wanted & set(g.roots)]


def channel_groups(
    model: nn.Module, example_inputs: ExampleInputs, *, roots: Iterable[str] | None = None
) -> list[ChannelGroup]:
    """The coupled channel groups of ``model`` (see :class:`ChannelGraph`), or only those of ``roots``.

    Example:
        >>> [g.roots for g in channel_groups(resnet, x) if len(g.roots) > 1]
        [('conv1', 'layer1.0.conv2', 'layer1.1.conv2')]
    """
    return ChannelGraph.build(model, example_inputs).select(roots)
