"""Registers the built-in architectures (the demo and test models the project defines itself)."""

from __future__ import annotations

from nncompress.models.mnist import Net
from nncompress.models.registry import Architecture, register

register(Architecture("mnist_net", Net, (1, 1, 28, 28), num_classes=10, description="The seed's MNIST CNN"))
