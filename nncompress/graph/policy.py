"""The one support policy: which layers and graph nodes keep a channel group whole, and why.

Every reason a group cannot change width is decided here and nowhere else, so preflight's verdict,
the pruners' choices and the speedup's removals are the same decision read three times.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nncompress.graph.ghost import SELF_CONCAT_REASON, is_self_concat_node
from nncompress.graph.shuffle import SHUFFLE_REASON, is_shuffle_node
from nncompress.graph.window_attention import WINDOW_ATTENTION_REASON, is_window_attention_node
from nncompress.layers import is_rms_norm
from nncompress.masked_norms import is_width_norm

__all__ = [
    "GROUPED_QUERY_REASON",
    "NORM_ROOTS",
    "ROOT_TYPES",
    "layer_blocker",
    "node_blocker",
]

# Layers whose output channels a config may select; groups are found from them first. Rooting at the
# producing conv/linear gives one group per producer, even when a concat feeds a BatchNorm over all of
# them at once (DenseNet): a group rooted at such a BatchNorm would merge them, and Torch-Pruning mis-maps
# its concat indices.
ROOT_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.Embedding,
    nn.MultiheadAttention,
)
# Norms root only the groups no producer reaches (a LayerNorm over an input, say).
NORM_ROOTS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
)

GROUPED_QUERY_REASON = (
    "grouped-query attention heads are not pruned (a key/value head serves several query heads)"
)


def layer_blocker(module: nn.Module, is_out: bool) -> str | None:
    """Why a layer in a group keeps the group whole, or None when it can shrink with it.

    Args:
        module: the layer.
        is_out: the group holds the layer's output channels (else its input channels).
    """
    if isinstance(module, nn.RNNBase) and is_out:
        # Hidden units form groups of their own (nncompress.graph.recurrent); a graph group reaches
        # them only when the output is tied to other channels, e.g. added to the layer's input.
        return "recurrent hidden units are not pruned together with other layers' channels"
    if (isinstance(module, nn.LayerNorm) or is_rms_norm(module)) and not is_width_norm(module):
        # Removing channels a norm normalises across changes the statistics of those that stay, so
        # the shrunk model would no longer compute what the masked one does (a LayerNorm over one
        # dimension and RMSNorm shrink exactly: nncompress.masked_norms).
        return f"{type(module).__name__} normalises across these channels"
    if isinstance(module, nn.MultiheadAttention):
        return "nn.MultiheadAttention is not pruned; write attention with Linear layers"
    return None


def node_blocker(node: Any) -> tuple[str | None, bool]:
    """Why a graph op keeps its group whole, and whether the walk stops there (an opaque op).

    Returns:
        ``(reason or None, opaque)``; an opaque node (a shuffle, Swin window attention) contributes
        nothing else to the group.
    """
    if is_shuffle_node(node):
        return SHUFFLE_REASON, True
    if is_window_attention_node(node):
        return WINDOW_ATTENTION_REASON, True
    if is_self_concat_node(node):
        return SELF_CONCAT_REASON, False
    return None, False
