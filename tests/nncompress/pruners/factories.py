"""Small models and a learnable synthetic data set for the pruner tests."""

from __future__ import annotations

import torch
from torch import nn

SEED_CONFIG = [
    {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
    {"exclude": True, "op_names": ["fc2"]},
]


class TinyResNet(nn.Module):
    """stem conv+BN, one residual block (c2's output is added to the stem's), a depthwise conv, a head."""

    def __init__(self, width: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.c1 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(2 * width)
        self.c2 = nn.Conv2d(2 * width, width, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(width)
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False)
        self.dwbn = nn.BatchNorm2d(width)
        self.pw = nn.Conv2d(width, 2 * width, 1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        y = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(x + self.b2(self.c2(y)))
        x = torch.relu(self.dwbn(self.dw(x)))
        x = torch.relu(self.pw(x))
        return self.fc(x.mean((2, 3)))


class TinyEncoder(nn.Module):
    """Token ids (vocabulary 50) → embedding 16 → one encoder layer (4 heads, FFN 32) → 3 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.enc = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, dropout=0.0)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc(self.emb(x)).mean(1))


def tiny_resnet(seed: int = 0) -> TinyResNet:
    torch.manual_seed(seed)
    model = TinyResNet()
    # non-trivial BatchNorm statistics and affine parameters, so "exactly zero" is not an accident
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def learnable_images(n: int = 96, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of 3x8x8 images whose class is the brightest colour channel (learnable, fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    x[torch.arange(n), y] += 1.5
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]


def mnist_like(n: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of 1x28x28 inputs for the seed Net, the class written as a bright row band."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = 0.1 * torch.randn(n, 1, 28, 28, generator=g)
    for i in range(n):
        x[i, 0, 2 * y[i] + 4] += 1.0
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]


def kept_rows(mask: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Bool per output channel: True when the mask keeps it."""
    return mask.movedim(dim, 0).reshape(mask.shape[dim], -1).ne(0).any(dim=1)
