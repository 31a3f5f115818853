"""A small feature-pyramid network: a strided backbone, 1x1 laterals, and top-down upsample-and-add."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _stage(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)
    )


class FPN(nn.Module):
    """Three backbone levels merged top-down; the finest merged map feeds a per-pixel head.

    Args:
        widths: backbone widths per level.
        pyramid: channels of every pyramid level (the laterals and the adds share them).
        num_classes: per-pixel outputs.
    """

    def __init__(
        self, widths: tuple[int, int, int] = (16, 32, 64), pyramid: int = 32, num_classes: int = 4
    ) -> None:
        super().__init__()
        self.c1 = _stage(3, widths[0], 1)
        self.c2 = _stage(widths[0], widths[1], 2)
        self.c3 = _stage(widths[1], widths[2], 2)
        self.lat1 = nn.Conv2d(widths[0], pyramid, 1)
        self.lat2 = nn.Conv2d(widths[1], pyramid, 1)
        self.lat3 = nn.Conv2d(widths[2], pyramid, 1)
        self.smooth = nn.Conv2d(pyramid, pyramid, 3, padding=1)
        self.head = nn.Conv2d(pyramid, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.c1(x)
        c2 = self.c2(c1)
        c3 = self.c3(c2)
        p3 = self.lat3(c3)
        p2 = self.lat2(c2) + F.interpolate(p3, scale_factor=2.0, mode="nearest")
        p1 = self.lat1(c1) + F.interpolate(p2, scale_factor=2.0, mode="nearest")
        return self.head(F.relu(self.smooth(p1)))
