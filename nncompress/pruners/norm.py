"""Weight-magnitude channel pruners: L1 norm, L2 norm, and FPGM (geometric median).

They need no data; the channels with the smallest scores are pruned.

Example:
    >>> config_list = [{"sparsity_per_layer": 0.5, "op_types": ["Conv2d", "Linear"]},
    ...                {"exclude": True, "op_names": ["fc2"]}]
    >>> model, masks = L1NormPruner(Net(), config_list).compress()
    >>> int(masks["conv1"]["weight"].sum(dim=(1, 2, 3)).count_nonzero())
    10
"""

from __future__ import annotations

from nncompress.pruners.base import ChannelPruner
from nncompress.pruners.importance import FPGMImportance, L1Importance, L2Importance

__all__ = ["FPGMPruner", "L1NormPruner", "L2NormPruner"]


class L1NormPruner(ChannelPruner):
    """Prunes the output channels whose weights have the smallest L1 norm.

    Args:
        model: the model.
        config_list: an NNI-style config_list.
        dummy_input: example inputs to find coupled channels with (recommended).
        mode: ``"dependency_aware"`` (default) or ``"normal"``.
    """

    name = "l1norm"
    importance = L1Importance()


class L2NormPruner(ChannelPruner):
    """Prunes the output channels whose weights have the smallest L2 norm (arguments as L1NormPruner)."""

    name = "l2norm"
    importance = L2Importance()


class FPGMPruner(ChannelPruner):
    """Prunes the filters nearest the geometric median of their layer (arguments as L1NormPruner).

    Such filters are the best replaced by the remaining ones (He et al., CVPR 2019).
    """

    name = "fpgm"
    importance = FPGMImportance()
