"""A small MobileNetV2 for 32x32 inputs: inverted residuals with depthwise 3x3 convs and ReLU6."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1, linear); residual add when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn(in_ch, hidden, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, out_ch, 1, act=False)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


# (expand ratio, output channels, repeats, stride) at width 1.0; a shortened MobileNetV2 schedule.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 2, 2),
    (6, 64, 2, 2),
)


class MobileNetV2(nn.Module):
    """MobileNetV2 with a width multiplier and a CIFAR stem (stride 1).

    Args:
        num_classes: classifier outputs.
        width_mult: scales every layer's width.
    """

    def __init__(self, num_classes: int = 10, width_mult: float = 0.5) -> None:
        super().__init__()
        stem = max(8, int(32 * width_mult))
        layers: list[nn.Module] = [_conv_bn(3, stem, 3)]
        in_ch = stem
        for expand, channels, repeats, stride in _SETTINGS:
            out_ch = max(8, int(channels * width_mult))
            for i in range(repeats):
                layers.append(InvertedResidual(in_ch, out_ch, stride if i == 0 else 1, expand))
                in_ch = out_ch
        last = 256
        layers.append(_conv_bn(in_ch, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.mean((2, 3))
        return self.classifier(x)
