"""Pruners: masks keyed by module name, NNI-compatible classes and a functional API.

Example:
    >>> from nncompress.pruners import L1NormPruner, prune
    >>> model, masks = L1NormPruner(net, config_list, dummy_input=x).compress()
    >>> result = prune(net, config_list, pruner="fpgm", example_inputs=x)
"""

from nncompress.pruners.activation import ActivationAPoZRankPruner, ActivationMeanRankPruner
from nncompress.pruners.base import ChannelPruner, Pruner
from nncompress.pruners.functional import LayerReport, PruneResult, layer_reports, prune
from nncompress.pruners.importance import FPGMImportance, Importance, L1Importance, L2Importance
from nncompress.pruners.level import LevelPruner
from nncompress.pruners.masks import Masks, apply_masks, mask_sparsity, remove_masks
from nncompress.pruners.norm import FPGMPruner, L1NormPruner, L2NormPruner
from nncompress.pruners.registry import PRUNERS, get_pruner
from nncompress.pruners.slim import SlimPruner
from nncompress.pruners.taylor import TaylorFOWeightPruner, TaylorPruner

__all__ = [
    "PRUNERS",
    "ActivationAPoZRankPruner",
    "ActivationMeanRankPruner",
    "ChannelPruner",
    "FPGMImportance",
    "FPGMPruner",
    "Importance",
    "L1Importance",
    "L1NormPruner",
    "L2Importance",
    "L2NormPruner",
    "LayerReport",
    "LevelPruner",
    "Masks",
    "PruneResult",
    "Pruner",
    "SlimPruner",
    "TaylorFOWeightPruner",
    "TaylorPruner",
    "apply_masks",
    "get_pruner",
    "layer_reports",
    "mask_sparsity",
    "prune",
    "remove_masks",
]
