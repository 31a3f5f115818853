"""The built-in architectures every zoo test covers, in one list so a new one is tested everywhere."""

from __future__ import annotations

BUILTIN_ARCHITECTURES: tuple[str, ...] = (
    "mnist_net",
    "vgg_bn",
    "resnet18_cifar",
    "resnet_bottleneck",
    "mobilenet_v2",
    "densenet",
    "unet",
    "se_cnn",
    "fpn",
    "transformer_classifier",
    "lstm_classifier",
    "gru_classifier",
)
