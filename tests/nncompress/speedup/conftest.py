"""Shared factories for the speedup tests."""

from __future__ import annotations

import torch
from torch import nn

from nncompress.models import get
from tests.nncompress.speedup.masking import Masks, l1_channel_masks

# Channel-pruning layer types handed to the project's pruner in the zoo tests.
OP_TYPES = ["Conv2d", "Linear", "Embedding", "LSTM", "GRU"]


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A seeded, eval-mode instance of a zoo architecture and its batch-1 example input."""
    arch = get(name)
    torch.manual_seed(seed)
    model = arch.build().eval()
    return model, arch.example_input(1, generator=torch.Generator().manual_seed(seed))


def head_masks(model: nn.Module, x: torch.Tensor, ratio: float = 0.5) -> Masks:
    """Channel masks where attention groups lose whole heads (the transformer's head size is 16)."""
    return l1_channel_masks(model, x, ratio, blocks={"attn": 16})
