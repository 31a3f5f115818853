"""Small models for config tests: names and types chosen to exercise every selector."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """conv -> bn -> relu, the unit most CNNs repeat."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Tiny(nn.Module):
    """Two blocks, a pool and a two-layer head: layer names with a dotted hierarchy."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(Block(3, 8), Block(8, 16))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


# Module names of Tiny that carry a weight, in named_modules() order.
TINY_WEIGHTED = [
    "features.0.conv",
    "features.0.bn",
    "features.1.conv",
    "features.1.bn",
    "head.1",
    "head.3",
]
