"""The shipped MNIST subset as a train/val split, the trained seed Net, and a pruned copy of it."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from nncompress.data import MNIST_MEAN, MNIST_STD, _path, mnist_net_weights_path
from nncompress.datasets import LabelledDataset, from_arrays, split
from nncompress.models.mnist import Net
from nncompress.pruners import prune
from nncompress.speedup import speedup

EXAMPLE = torch.zeros(1, 1, 28, 28)


def mnist_split(n: int = 1000, val_fraction: float = 0.3) -> tuple[LabelledDataset, LabelledDataset]:
    """The first ``n`` shipped MNIST test images, normalised, split 70/30 with seed 0."""
    with np.load(_path("mnist_subset.npz")) as npz:
        ds = from_arrays(
            npz["images"][:n], npz["labels"][:n], normalize=(MNIST_MEAN, MNIST_STD), num_classes=10
        )
    return split(ds, val_fraction, seed=0)


def trained_net() -> Net:
    net = Net()
    net.load_state_dict(load_file(str(mnist_net_weights_path())))
    return net.eval()


def seed_config(sparsity: float) -> list[dict[str, object]]:
    return [
        {"sparsity_per_layer": sparsity, "op_types": ["Linear", "Conv2d"]},
        {"exclude": True, "op_names": ["fc2"]},
    ]


def pruned_net(sparsity: float = 0.8) -> torch.nn.Module:
    """The trained Net with ``sparsity`` of its channels removed (L1 norm + speedup)."""
    net = trained_net()
    masks = prune(net, seed_config(sparsity), example_inputs=EXAMPLE).masks
    return speedup(net, masks, EXAMPLE).model
