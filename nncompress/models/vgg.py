"""A CIFAR-size VGG with BatchNorm: plain conv stacks, max pooling, and a flatten into the classifier."""

from __future__ import annotations

import torch
from torch import nn

# Channel counts per conv layer; "M" is a 2x2 max pool. Narrower than VGG-11 so tests run fast on CPU.
VGG_SMALL: tuple[int | str, ...] = (32, "M", 64, "M", 128, 128, "M", 256, 256, "M")


class VGG(nn.Module):
    """VGG-style network whose last feature map (2x2 for a 32x32 input) is flattened into the classifier.

    Args:
        cfg: conv widths and ``"M"`` pooling markers.
        num_classes: classifier outputs.
        in_channels: image channels.
    """

    def __init__(
        self, cfg: tuple[int | str, ...] = VGG_SMALL, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            width = int(item)
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        # The flatten keeps spatial positions, so each pruned channel removes 4 classifier inputs.
        self.classifier = nn.Sequential(
            nn.Linear(channels * 2 * 2, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))
