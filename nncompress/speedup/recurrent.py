"""Channel pruning for single-layer ``nn.LSTM`` / ``nn.GRU``, which Torch-Pruning lacks or gets wrong.

A recurrent layer's "output channels" are its hidden units. Unit ``j`` owns row ``j`` of every gate block
in ``weight_ih``/``weight_hh``/biases, and column ``j`` of ``weight_hh`` (its recurrent input). When all
rows of unit ``j`` are zero its hidden state stays exactly zero (LSTM: g = tanh(0) = 0 keeps c at 0;
GRU: n = tanh(0) = 0 and h = z * h_prev from h_0 = 0), so removing the unit is exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch_pruning as tp
from torch import nn

from nncompress.errors import UnsupportedModelError

RecurrentLayer = nn.LSTM | nn.GRU


def gate_count(layer: RecurrentLayer) -> int:
    """Gate blocks stacked in each weight matrix: 4 for LSTM (i, f, g, o), 3 for GRU (r, z, n)."""
    return 4 if isinstance(layer, nn.LSTM) else 3


def check_supported(layer: RecurrentLayer, name: str) -> None:
    """Raises UnsupportedModelError for layouts the pruner does not handle (stacked, bidirectional, proj)."""
    if layer.num_layers != 1 or layer.bidirectional or int(getattr(layer, "proj_size", 0)):
        raise UnsupportedModelError(
            f"recurrent layer {name!r} has num_layers={layer.num_layers}, "
            f"bidirectional={layer.bidirectional}; "
            "only single-layer unidirectional LSTM/GRU without projections can be pruned",
            layer=name,
        )


def unit_rows(layer: RecurrentLayer, units: torch.Tensor) -> torch.Tensor:
    """Rows of the stacked gate matrices that belong to hidden ``units``."""
    hidden = layer.hidden_size
    return torch.cat([units + gate * hidden for gate in range(gate_count(layer))])


def _select(param: object, index: torch.Tensor, dim: int) -> nn.Parameter:
    assert isinstance(param, torch.Tensor)
    return nn.Parameter(
        param.detach().index_select(dim, index.to(param.device)).contiguous(), param.requires_grad
    )


def _keep(total: int, removed: Sequence[int]) -> torch.Tensor:
    dropped = set(removed)
    return torch.tensor([i for i in range(total) if i not in dropped], dtype=torch.long)


class RecurrentPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning handler that removes hidden units (out) or input features (in) of LSTM/GRU."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        assert isinstance(layer, nn.LSTM | nn.GRU)
        keep = _keep(layer.hidden_size, idxs)
        rows = unit_rows(layer, keep)
        layer.weight_ih_l0 = _select(layer.weight_ih_l0, rows, 0)
        layer.weight_hh_l0 = _select(_select(layer.weight_hh_l0, rows, 0), keep, 1)
        if layer.bias:
            layer.bias_ih_l0 = _select(layer.bias_ih_l0, rows, 0)
            layer.bias_hh_l0 = _select(layer.bias_hh_l0, rows, 0)
        layer.hidden_size = len(keep)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        assert isinstance(layer, nn.LSTM | nn.GRU)
        keep = _keep(layer.input_size, idxs)
        layer.weight_ih_l0 = _select(layer.weight_ih_l0, keep, 1)
        layer.input_size = len(keep)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.hidden_size)  # type: ignore[arg-type]

    def get_in_channels(self, layer: nn.Module) -> int:
        return int(layer.input_size)  # type: ignore[arg-type]


@contextmanager
def opaque_recurrent_layers(model: nn.Module) -> Iterator[None]:
    """Makes each LSTM/GRU look like one op to Torch-Pruning's autograd tracer.

    On CPU a GRU's autograd graph unrolls into per-timestep split/chunk nodes (seconds to trace for 256
    tokens, and Torch-Pruning then mis-maps the splits). While tracing, a forward hook replaces the output
    with a value-identical tensor whose only autograd path leads straight back to the layer input through
    element-wise ops, which couples the input features to the preceding layer and nothing else.
    """

    def _shim(module: nn.Module, inputs: tuple[object, ...], output: object) -> object:
        x = inputs[0]
        if not isinstance(output, tuple) or not isinstance(x, torch.Tensor):
            return output
        out = output[0].detach() + (x * 0).sum()
        return (out, *output[1:])

    handles = [m.register_forward_hook(_shim) for m in model.modules() if isinstance(m, nn.LSTM | nn.GRU)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
