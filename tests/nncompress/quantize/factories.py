"""Small models and data for the quantization tests (trained seed Net, tiny ResNet, LSTM classifier)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from torch import nn

from nncompress.data import load_mnist_subset, mnist_net_weights_path
from nncompress.models import get
from nncompress.models.resnet import BasicBlock, ResNet


def trained_net() -> nn.Module:
    """The seed Net with the shipped weights (98.17% on MNIST test), in eval mode."""
    net = get("mnist_net").build()
    net.load_state_dict(load_file(str(mnist_net_weights_path())))
    return net.eval()


def mnist(limit: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Shipped real MNIST test images (normalised) and labels."""
    return load_mnist_subset(limit)


def batches(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def tiny_resnet(seed: int = 0) -> nn.Module:
    """A 3-stage BasicBlock ResNet (widths 8-16-32) with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = ResNet(BasicBlock, (1, 1, 1), widths=(8, 16, 32), num_classes=10)
    # Random running stats and affine params, so folding BatchNorm into the convs really changes them.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def lstm(seed: int = 0) -> nn.Module:
    """The zoo's LSTM text classifier (vocabulary 1000, embedding 64, hidden 128), random weights."""
    torch.manual_seed(seed)
    return get("lstm_classifier").build().eval()


def tokens(batch: int, length: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 1000, (batch, length), generator=torch.Generator().manual_seed(seed))


def top1_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).float().mean())
