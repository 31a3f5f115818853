"""Factories shared by the io tests: the seed Net, pruned at 50% with the seed's config_list."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

SEED_CONFIG = [
    {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
    {"exclude": True, "op_names": ["fc2"]},
]


@dataclass
class Pruned:
    model: nn.Module
    kept: dict[str, dict[str, list[int]]]
    example: torch.Tensor


def prune_and_speedup(arch_name: str, config: list[dict[str, object]], seed: int = 0) -> Pruned:
    """Builds ``arch_name`` with seeded weights, prunes it with l1norm and shrinks it."""
    from nncompress.models import get
    from nncompress.pruners import prune
    from nncompress.speedup import speedup

    torch.manual_seed(seed)
    arch = get(arch_name)
    model = arch.build().eval()
    example = arch.example_input(1, generator=torch.Generator().manual_seed(seed))
    masks = prune(model, config, pruner="l1norm", example_inputs=example).masks
    result = speedup(model, masks, example)
    return Pruned(result.model.eval(), {k: dict(v) for k, v in result.kept.items()}, example)


@pytest.fixture(scope="module")
def pruned_net() -> Pruned:
    return prune_and_speedup("mnist_net", SEED_CONFIG)
