"""Swin window attention (torchvision ShiftedWindowAttention[V2], timm WindowAttention) as one opaque op.

Followed op by op, window attention gives Torch-Pruning couplings that do not exist (the relative position
bias table's head dim read as the residual width, torchvision's functional ``F.linear`` read as an
element-wise op from the stream to q/k/v) and index lists that grow without bound. While tracing,
:func:`opaque_window_attention` presents each such module's output to autograd as computed directly from its
input (:class:`WindowAttentionOp`); the residual width it reads and writes is then refused by name
(:func:`is_window_attention_node`), since torchvision's forward takes the width from its input while its
weights keep theirs. The MLPs between attentions (``fc1 → fc2`` hidden width) prune as usual.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = [
    "WINDOW_ATTENTION_REASON",
    "WindowAttentionOp",
    "is_window_attention",
    "is_window_attention_node",
    "opaque_window_attention",
]

WINDOW_ATTENTION_REASON = (
    "Swin window attention reads and writes these channels (the residual width); they are kept, "
    "the MLP hidden widths still prune"
)


def is_window_attention(module: nn.Module) -> bool:
    """A Swin window attention: a ``*WindowAttention*`` class with ``qkv`` and ``proj`` Linears."""
    return (
        "WindowAttention" in type(module).__name__
        and isinstance(getattr(module, "qkv", None), nn.Linear)
        and isinstance(getattr(module, "proj", None), nn.Linear)
    )


class WindowAttentionOp(torch.autograd.Function):
    """Presents a window attention's output to autograd as computed directly from its input."""

    @staticmethod
    def forward(ctx: Any, inp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        ctx.shape = inp.shape
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.new_zeros(ctx.shape), None


def is_window_attention_node(node: Any) -> bool:
    """True for a Torch-Pruning graph node that stands for a :class:`WindowAttentionOp`."""
    grad_fn = getattr(node, "grad_fn", None)
    return grad_fn is not None and type(grad_fn).__name__ == "WindowAttentionOpBackward"


def _hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
    if not inputs or not isinstance(inputs[0], torch.Tensor) or not isinstance(output, torch.Tensor):
        return output
    if output.shape[-1] != inputs[0].shape[-1]:
        return output  # not the width-preserving attention this handles: leave it to the graph
    return WindowAttentionOp.apply(inputs[0], output.detach())


@contextmanager
def opaque_window_attention(model: nn.Module) -> Iterator[None]:
    """While active, every Swin window attention in ``model`` reads as one :class:`WindowAttentionOp`."""
    handles = [m.register_forward_hook(_hook) for m in model.modules() if is_window_attention(m)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
