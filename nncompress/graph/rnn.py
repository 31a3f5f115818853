"""Hidden-unit pruning of ``nn.LSTM`` / ``nn.GRU`` (stacked and bidirectional), for the channel graph.

A recurrent layer's "output channels" are its hidden units. Unit ``j`` owns row ``j`` of every gate block in
each ``weight_ih_l{k}[_reverse]``/``weight_hh_l{k}[_reverse]``/bias, column ``j`` of every ``weight_hh``
(its recurrent input) and, in layer ``k + 1``, the input columns ``j`` (and ``hidden + j`` when
bidirectional). ``nn.LSTM`` has one ``hidden_size`` for all layers and directions, so unit ``j`` is one
channel across all of them. When all rows of unit ``j`` are zero its hidden state stays exactly zero
(LSTM: g = tanh(0) = 0 keeps c at 0; GRU: n = tanh(0) = 0 and h = z * h_prev from h_0 = 0), so removing
the unit everywhere is exact.

Torch-Pruning would unroll the layer into per-timestep autograd ops (and mis-map their splits), so while
tracing the layer is opaque: its output is presented as computed from its input, its returned state as
computed from its output. :func:`recurrent_units` then walks the traced graph from the layer to the
layers that read its output or state, numbering their input features by unit (``feature % hidden``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch_pruning as tp
from torch import nn

RecurrentLayer = nn.LSTM | nn.GRU

__all__ = [
    "RecurrentPruner",
    "RecurrentUnits",
    "gate_count",
    "opaque_recurrent",
    "prune_units",
    "recurrent_units",
    "unit_rows",
    "zero_units",
]

# Ops a hidden state may pass through on its way to a reader without its features being mixed: slicing
# the time or layer dimension, squeezing, activations, dropout, concatenating the directions.
PASS_OPS = {
    tp.ops.OPTYPE.ELEMENTWISE,
    tp.ops.OPTYPE.SLICE,
    tp.ops.OPTYPE.RESHAPE,
    tp.ops.OPTYPE.CONCAT,
    tp.ops.OPTYPE.UNBIND,
    tp.ops.OPTYPE.SPLIT,
}


def gate_count(layer: nn.Module) -> int:
    """Gate blocks stacked in each weight matrix: 4 for LSTM (i, f, g, o), 3 for GRU (r, z, n)."""
    return 4 if isinstance(layer, nn.LSTM) else 3


def _suffixes(layer: nn.Module) -> list[str]:
    directions = ("", "_reverse") if layer.bidirectional else ("",)
    return [f"_l{k}{d}" for k in range(int(cast(nn.RNNBase, layer).num_layers)) for d in directions]


def unit_rows(layer: nn.Module, units: torch.Tensor) -> torch.Tensor:
    """Rows of the stacked gate matrices that belong to hidden ``units``."""
    hidden = int(cast(nn.RNNBase, layer).hidden_size)
    return torch.cat([units + gate * hidden for gate in range(gate_count(layer))])


def unit_slices(layer: nn.Module) -> list[tuple[str, int, torch.Tensor, torch.Tensor]]:
    """Every ``(param, dim, positions, unit of each position)`` of ``layer`` that moves with its hidden units.

    Rows of all gate matrices and biases come first (``weight_ih_l0`` leads: it ranks the units), then the
    columns that read the hidden state (``weight_hh`` and the inputs of layers above the first).
    """
    hidden = int(cast(nn.RNNBase, layer).hidden_size)
    units = torch.arange(hidden)
    rows = unit_rows(layer, units)
    row_units = rows % hidden
    found: list[tuple[str, int, torch.Tensor, torch.Tensor]] = []
    for sfx in _suffixes(layer):
        for name in (f"weight_ih{sfx}", f"weight_hh{sfx}", f"bias_ih{sfx}", f"bias_hh{sfx}"):
            if getattr(layer, name, None) is not None:
                found.append((name, 0, rows, row_units))
    width = 2 * hidden if layer.bidirectional else hidden
    cols = torch.arange(width)
    for sfx in _suffixes(layer):
        found.append((f"weight_hh{sfx}", 1, units, units))
        if not sfx.startswith("_l0"):
            found.append((f"weight_ih{sfx}", 1, cols, cols % hidden))
    return found


def _select(param: object, index: torch.Tensor, dim: int) -> nn.Parameter:
    assert isinstance(param, torch.Tensor)
    return nn.Parameter(
        param.detach().index_select(dim, index.to(param.device)).contiguous(), param.requires_grad
    )


def _keep(total: int, removed: Sequence[int]) -> torch.Tensor:
    dropped = set(removed)
    return torch.tensor([i for i in range(total) if i not in dropped], dtype=torch.long)


def prune_units(layer: nn.Module, removed: Sequence[int]) -> nn.Module:
    """Removes hidden units ``removed`` from every layer and direction of ``layer``, in place."""
    assert isinstance(layer, nn.LSTM | nn.GRU)
    keep = _keep(int(layer.hidden_size), removed)
    new: dict[str, torch.Tensor] = {}
    for name, dim, index, units in unit_slices(layer):
        current = new.get(name, getattr(layer, name))
        positions = index[torch.isin(units, keep)]
        if dim == 0:  # rows are numbered before any column was cut
            new[name] = _select(current, positions, 0)
        else:
            new[name] = _select(current, positions, 1)
    for name, value in new.items():
        setattr(layer, name, value)
    layer.hidden_size = len(keep)
    layer._init_flat_weights()  # type: ignore[operator]
    return layer


@torch.no_grad()
def zero_units(layer: nn.Module) -> torch.Tensor:
    """For each hidden unit: are all its gate rows zero in every layer and direction (so it stays 0)?"""
    hidden = int(cast(nn.RNNBase, layer).hidden_size)
    zero = torch.ones(hidden, dtype=torch.bool)
    for name, dim, index, _units in unit_slices(layer):
        if dim != 0:
            continue
        param = getattr(layer, name)
        per_row = param.reshape(param.shape[0], -1).eq(0).all(1).cpu()[index]
        zero &= per_row.reshape(-1, hidden).all(0)
    return zero


class RecurrentPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning handler: an LSTM/GRU consumes pruned input features; its hidden units are pruned apart.

    ``get_out_channels`` is None so that Torch-Pruning never roots a group at the layer (its index
    mapping cannot follow a bidirectional output); :func:`recurrent_units` describes those groups.
    """

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return prune_units(layer, idxs)

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        assert isinstance(layer, nn.LSTM | nn.GRU)
        keep = _keep(int(layer.input_size), idxs)
        for sfx in ("_l0", "_l0_reverse") if layer.bidirectional else ("_l0",):
            name = f"weight_ih{sfx}"
            setattr(layer, name, _select(getattr(layer, name), keep, 1))
        layer.input_size = len(keep)
        layer._init_flat_weights()  # type: ignore[operator]
        return layer

    def get_out_channels(self, layer: nn.Module) -> int | None:
        return None

    def get_in_channels(self, layer: nn.Module) -> int:
        return int(layer.input_size)  # type: ignore[arg-type]


class _Opaque(torch.autograd.Function):
    """Presents a value to autograd as computed directly from ``anchor`` (tracing only)."""

    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx.shape = anchor.shape
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.new_zeros(ctx.shape), None


Traced = dict[nn.Module, list[Any]]


@contextmanager
def opaque_recurrent(model: nn.Module) -> Iterator[Traced]:
    """Makes each RNN/LSTM/GRU one op for the tracer; yields ``{layer: [grad_fn of output, of state...]}``.

    The output reads the layer's input (so the input features couple with the layer before it and nothing
    else), the returned state reads the output (so readers of ``h_n`` are found as readers of the layer).
    Packed sequences keep their own graph.
    """
    traced: Traced = {}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        if not inputs or not isinstance(inputs[0], torch.Tensor) or not isinstance(output, tuple):
            return output
        out = _Opaque.apply(inputs[0], output[0].detach())
        state = output[1]
        if isinstance(state, tuple):
            state = tuple(_Opaque.apply(out, t.detach()) for t in state)
            fns = [t.grad_fn for t in state]
        else:
            state = _Opaque.apply(out, state.detach())
            fns = [state.grad_fn]
        traced.setdefault(module, []).extend([out.grad_fn, *fns])
        return out, state

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.RNN | nn.LSTM | nn.GRU)
    ]
    try:
        yield traced
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class RecurrentUnits:
    """The hidden units of one recurrent layer and the layers that read them.

    Attributes:
        layer: qualified name of the LSTM/GRU.
        hidden: hidden units (channels of the group).
        readers: ``(module name, input width)`` of each Linear/LSTM/GRU reading the output or state; input
            feature ``c`` of a reader is unit ``c % hidden``.
        blocker: why the units cannot be removed, or None.
    """

    layer: str
    hidden: int
    readers: tuple[tuple[str, int], ...]
    blocker: str | None = None


def _reader_width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    if isinstance(module, nn.LSTM | nn.GRU):
        return int(module.input_size)
    return None


def recurrent_units(dg: tp.DependencyGraph, traced: Traced) -> list[RecurrentUnits]:
    """Describes the hidden-unit group of every LSTM/GRU traced under :func:`opaque_recurrent`.

    The walk goes from the layer's output and state through shape and element-wise ops to the first
    layers that read them. Anything else on the way (an add with other features, a norm, a conv, the
    model output, a flatten over time) makes the units unremovable, with the reason.
    """
    names = {m: n for n, m in dg.model.named_modules()}
    by_fn = {node.grad_fn: node for node in dg.module2node.values() if node.grad_fn is not None}
    found: list[RecurrentUnits] = []
    for layer, fns in traced.items():
        name = names.get(layer, type(layer).__name__)
        if not isinstance(layer, nn.LSTM | nn.GRU):
            continue
        hidden = int(layer.hidden_size)
        blocker = None
        if int(getattr(layer, "proj_size", 0)):
            blocker = f"{name}: LSTM with proj_size is not pruned"
        readers: dict[str, int] = {}
        reached = [by_fn[f] for f in fns if f in by_fn]
        seen = {id(n) for n in reached}
        passed = []  # op nodes the state goes through
        queue = list(reached)
        while queue and blocker is None:
            node = queue.pop()
            if not node.outputs:
                blocker = f"{name}: its hidden state is an output of the model"
            for nxt in node.outputs:
                module = nxt.module
                width = _reader_width(module) if isinstance(module, nn.Module) else None
                if width is not None and module in names:
                    if width not in (hidden, 2 * hidden):
                        blocker = f"{name}: {names[module]} reads {width} features of its {hidden} units"
                    readers[names[module]] = width
                elif nxt.type == tp.ops.OPTYPE.OUTPUT:
                    blocker = f"{name}: its hidden state is an output of the model"
                elif nxt.type not in PASS_OPS:
                    through = names.get(module, type(module).__name__)
                    blocker = f"{name}: its hidden state goes through {through}"
                elif id(nxt) not in seen:
                    seen.add(id(nxt))
                    passed.append(nxt)
                    queue.append(nxt)
        for node in passed:
            # an add/cat with features from elsewhere would tie the units to other channels
            if blocker is None and any(id(i) not in seen for i in node.inputs):
                blocker = f"{name}: its hidden state is combined with other features at {node.name}"
        if not readers and blocker is None:
            blocker = f"{name}: nothing reads its hidden state"
        found.append(RecurrentUnits(name, hidden, tuple(readers.items()), blocker))
    return found
