"""Hidden units of LSTM/GRU layers as prunable channel groups for the pruners and preflight.

Both graph builders find the readers of a recurrent layer with
:func:`nncompress.speedup.recurrent.recurrent_units`;
this module turns that description into a :class:`nncompress.dependency.ChannelGroup`: channel ``j`` is
hidden unit ``j``, its members are the unit's gate rows in every layer and direction (``weight_ih_l0``
first, so pruners rank units by their input weights summed over gates), its consumers the columns that read
the unit (recurrent weights, the next layer's inputs, the readers' input features ``c`` with ``c % hidden
== j``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch_pruning as tp
from torch import nn

from nncompress.speedup.recurrent import recurrent_units, unit_slices

if TYPE_CHECKING:
    from nncompress.dependency import ChannelGroup

__all__ = ["recurrent_groups"]


def recurrent_groups(model: nn.Module, dg: tp.DependencyGraph) -> list[ChannelGroup]:
    """One group per LSTM/GRU traced by :func:`nncompress.dependency.build_graph` (none if it traced none).

    Args:
        model: the traced model.
        dg: its graph; ``build_graph`` records the recurrent layers' outputs on it.

    Returns:
        Groups rooted at each recurrent layer; unprunable ones carry the reason as a blocker.
    """
    from nncompress.dependency import ChannelGroup, ChannelSlice  # dependency imports this module

    groups: list[ChannelGroup] = []
    for units in recurrent_units(dg, getattr(dg, "_nncompress_recurrent", {})):
        layer = model.get_submodule(units.layer)
        members: list[ChannelSlice] = []
        consumers: list[ChannelSlice] = []
        for param, dim, index, unit in unit_slices(layer):
            s = ChannelSlice(units.layer, param, dim, tuple(index.tolist()), tuple(unit.tolist()))
            (members if dim == 0 else consumers).append(s)
        for reader, width in units.readers:
            module = model.get_submodule(reader)
            params = ["weight"] if isinstance(module, nn.Linear) else _input_params(module)
            cols = tuple(range(width))
            chans = tuple(c % units.hidden for c in cols)
            consumers.extend(ChannelSlice(reader, p, 1, cols, chans) for p in params)
        groups.append(
            ChannelGroup(
                roots=(units.layer,),
                members=tuple(members),
                consumers=tuple(consumers),
                channels=units.hidden,
                blockers=(units.blocker,) if units.blocker else (),
            )
        )
    return groups


def _input_params(layer: nn.Module) -> list[str]:
    return ["weight_ih_l0", *(["weight_ih_l0_reverse"] if getattr(layer, "bidirectional", False) else [])]
