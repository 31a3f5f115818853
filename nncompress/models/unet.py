"""A small UNet: an encoder, a bottleneck, and a decoder that upsamples and concatenates encoder skips."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Two-level UNet with bilinear ``F.interpolate`` upsampling and skip concatenation.

    Args:
        in_channels: image channels.
        num_classes: per-pixel output channels (kept unpruned: they are the model's output).
        base: width of the first level.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, base: int = 16) -> None:
        super().__init__()
        self.enc1 = _double_conv(in_channels, base)
        self.enc2 = _double_conv(base, base * 2)
        self.bottleneck = _double_conv(base * 2, base * 4)
        self.dec2 = _double_conv(base * 4 + base * 2, base * 2)
        self.dec1 = _double_conv(base * 2 + base, base)
        self.head = nn.Conv2d(base, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottleneck(F.max_pool2d(e2, 2))
        up2 = F.interpolate(b, size=e2.shape[-2:], mode="bilinear", align_corners=False)
        d2 = self.dec2(torch.cat([up2, e2], dim=1))
        up1 = F.interpolate(d2, scale_factor=2.0, mode="nearest")
        d1 = self.dec1(torch.cat([up1, e1], dim=1))
        return self.head(d1)
