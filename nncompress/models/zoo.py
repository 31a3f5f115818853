"""Registers the built-in architectures (the demo and test models the project defines itself)."""

from __future__ import annotations

import torch

from nncompress.models.densenet import DenseNet
from nncompress.models.fpn import FPN
from nncompress.models.mnist import Net
from nncompress.models.mobilenet import MobileNetV2
from nncompress.models.recurrent import gru_classifier, lstm_classifier
from nncompress.models.registry import Architecture, register
from nncompress.models.resnet import resnet18_cifar, resnet_bottleneck_small
from nncompress.models.senet import SENet
from nncompress.models.transformer import TransformerClassifier
from nncompress.models.unet import UNet
from nncompress.models.vgg import VGG

_CIFAR = (1, 3, 32, 32)

register(Architecture("mnist_net", Net, (1, 1, 28, 28), num_classes=10, description="The seed's MNIST CNN"))
register(
    Architecture(
        "vgg_bn", VGG, _CIFAR, num_classes=10, description="CIFAR VGG with BatchNorm, flatten into FC"
    )
)
register(
    Architecture(
        "resnet18_cifar", resnet18_cifar, _CIFAR, num_classes=10, description="CIFAR ResNet-18 (BasicBlock)"
    )
)
register(
    Architecture(
        "resnet_bottleneck",
        resnet_bottleneck_small,
        _CIFAR,
        num_classes=10,
        description="Small Bottleneck ResNet",
    )
)
register(
    Architecture(
        "mobilenet_v2", MobileNetV2, _CIFAR, num_classes=10, description="MobileNetV2 x0.5, CIFAR stem"
    )
)
register(
    Architecture("densenet", DenseNet, _CIFAR, num_classes=10, description="DenseNet-style blocks (concat)")
)
register(Architecture("unet", UNet, (1, 3, 32, 32), description="Two-level UNet (interpolate + skip concat)"))
register(
    Architecture("se_cnn", SENet, _CIFAR, num_classes=10, description="CNN with squeeze-excitation gating")
)
register(Architecture("fpn", FPN, _CIFAR, description="Feature pyramid: upsample-and-add"))
register(
    Architecture(
        "transformer_classifier",
        TransformerClassifier,
        (1, 32),
        input_dtype=torch.long,
        num_classes=4,
        description="Transformer encoder classifier (q/k/v/out Linear heads, FFN, LayerNorm)",
        kwargs={"vocab_size": 1000},
    )
)
register(
    Architecture(
        "lstm_classifier",
        lstm_classifier,
        (1, 256),
        input_dtype=torch.long,
        num_classes=4,
        description="Embedding + LSTM + linear over 256 tokens",
        kwargs={"vocab_size": 1000},
    )
)
register(
    Architecture(
        "gru_classifier",
        gru_classifier,
        (1, 256),
        input_dtype=torch.long,
        num_classes=4,
        description="Embedding + GRU + linear over 256 tokens",
        kwargs={"vocab_size": 1000},
    )
)
