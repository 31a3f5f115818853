"""Hidden units of LSTM/GRU layers as channel groups.

:func:`nncompress.graph.rnn.recurrent_units` finds, on the traced graph, the layers that read a
recurrent layer's output or state. Channel ``j`` of the group is hidden unit ``j``: its members are the unit's
gate rows in every layer and direction (``weight_ih_l0`` first, so pruners rank units by their input weights
summed over gates), its consumers the columns that read the unit (recurrent weights, the next layer's
inputs, the readers' input features ``c`` with ``c % hidden == j``).
"""

from __future__ import annotations

import torch_pruning as tp
from torch import nn

from nncompress.graph.records import ChannelGroup, ChannelSlice, LayerSide
from nncompress.graph.rnn import recurrent_units, unit_slices

__all__ = ["recurrent_groups"]


def recurrent_groups(dg: tp.DependencyGraph) -> list[ChannelGroup]:
    """One group per LSTM/GRU the trace reached; unprunable ones carry the reason as a blocker."""
    model = dg.model
    groups: list[ChannelGroup] = []
    for units in recurrent_units(dg, getattr(dg, "_nncompress_recurrent", {})):
        layer = model.get_submodule(units.layer)
        members: list[ChannelSlice] = []
        consumers: list[ChannelSlice] = []
        for param, dim, index, unit in unit_slices(layer):
            s = ChannelSlice(units.layer, param, dim, tuple(index.tolist()), tuple(unit.tolist()))
            (members if dim == 0 else consumers).append(s)
        hidden = tuple(range(units.hidden))
        layers = [LayerSide(units.layer, "out", hidden, hidden, units.hidden)]
        for reader, width in units.readers:
            module = model.get_submodule(reader)
            params = ["weight"] if isinstance(module, nn.Linear) else _input_params(module)
            cols = tuple(range(width))
            chans = tuple(c % units.hidden for c in cols)
            consumers.extend(ChannelSlice(reader, p, 1, cols, chans) for p in params)
            layers.append(LayerSide(reader, "in", cols, chans, width))
        groups.append(
            ChannelGroup(
                key=units.layer,
                roots=(units.layer,),
                members=tuple(members),
                consumers=tuple(consumers),
                channels=units.hidden,
                layers=tuple(layers),
                blockers=(units.blocker,) if units.blocker else (),
            )
        )
    return groups


def _input_params(layer: nn.Module) -> list[str]:
    return ["weight_ih_l0", *(["weight_ih_l0_reverse"] if getattr(layer, "bidirectional", False) else [])]
