"""FLOPs of one forward pass, counted by ``FlopCounterMode`` with formulas for the fused recurrent ops.

The pass runs on fake tensors (shapes and dtypes, no arithmetic): FlopCounterMode's formulas read
only shapes, so the count is the same, and the pass is far cheaper. Under the counter a real pass
takes a slower route (convolutions are decomposed): on a loaded 2-core CPU one ResNet-50 pass took
0.76-2.3 s counted against 0.16 s plain, and 0.30 s on fake tensors (benchmarks/job_overhead.py,
issue 10). A model whose forward needs real values (data-dependent shapes or control flow) is
counted on a real pass instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops"]


def _recurrent_flops(
    input_shape: Sequence[int],
    hx: object,
    params: Sequence[Sequence[int]],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
    *args: object,
    out_shape: object = None,
    **kwargs: object,
) -> int:
    """FLOPs of ``aten.lstm`` / ``aten.gru`` / ``aten.rnn_*`` (``.input`` overloads), from shapes.

    Every time step multiplies the input by each layer's ``weight_ih`` and the hidden state by its
    ``weight_hh``: 2 × steps × batch × (elements of all weight matrices). Gate nonlinearities and
    bias adds are elementwise and, as everywhere in FlopCounterMode, not counted. GRU measured by
    its decomposition into ``addmm`` gives exactly this count.
    """
    steps, batch = (input_shape[1], input_shape[0]) if batch_first else (input_shape[0], input_shape[1])
    matrices = sum(math.prod(shape) for shape in params if len(shape) == 2)
    return 2 * steps * batch * matrices


# CPU torch runs nn.LSTM as one fused aten.lstm op, which FlopCounterMode has no formula for (it
# counted 0 FLOPs for the LSTM layer of lstm_classifier); these give the recurrent layers their due.
_RECURRENT_OPS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def count_flops(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one forward pass of ``model`` on ``inputs`` (matmul-like ops, 2 per MAC).

    Args:
        model: the model (run once without gradients: on fake tensors, else on ``inputs``).
        inputs: its positional inputs.

    Returns:
        The total FLOPs FlopCounterMode counted, with the recurrent layers' from :func:`_recurrent_flops`.
    """
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as fake:  # parameters are faked as used
            return _counted(model, tuple(fake.from_tensor(t) for t in inputs))
    except Exception:  # the forward needs real values (e.g. .item(), nonzero); its FLOPs do not
        return _counted(model, inputs)


def _counted(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    # FlopCounterMode counts by op packet (aten.lstm) but decides whether to decompose an op by its
    # overload (aten.lstm.input): register both, or the fused op is decomposed into ops it ignores.
    packets = [getattr(torch.ops.aten, name) for name in _RECURRENT_OPS]
    mapping: dict[Any, Any] = {p: _recurrent_flops for p in packets}
    mapping.update({p.input: _recurrent_flops for p in packets})
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.inference_mode(), counter:
        model(*inputs)
    return int(counter.get_total_flops())
