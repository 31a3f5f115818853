"""A CNN with squeeze-excitation blocks: channel gating by multiply, Hardswish/Hardsigmoid activations."""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """Global pool, reduce (1x1), ReLU, expand (1x1), Hardsigmoid, then scale the input channels."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(channels // reduction, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
        return x * scale


class SEBlock(nn.Module):
    """Conv-BN-Hardswish followed by squeeze-excitation."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.Hardswish()
        self.se = SqueezeExcite(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.act(self.bn(self.conv(x))))


class SENet(nn.Module):
    """Three SE blocks, global average pool, linear head.

    Args:
        widths: output channels of each block.
        num_classes: classifier outputs.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), num_classes: int = 10) -> None:
        super().__init__()
        blocks = []
        in_ch = 3
        for index, width in enumerate(widths):
            blocks.append(SEBlock(in_ch, width, 1 if index == 0 else 2))
            in_ch = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        return self.head(x.mean(dim=(2, 3)))
