"""The channel graph: which channels of a model are coupled, traced once and read by every stage.

Pruning one output channel of a conv is only meaningful together with everything that reads or carries
that channel: its bias, the BatchNorm after it, a depthwise conv that follows, the other convs whose
outputs are added to it in a residual block, and the input columns of the next layer. Torch-Pruning
traces the model with autograd and records these couplings; :class:`ChannelGraph` turns them into
plain, frozen groups keyed by module and parameter names, with one support policy
(:mod:`nncompress.graph.policy`) deciding which groups must keep their width and why. Pruners rank and
mask by these groups, preflight reports them, and the speedup removes channels by them, so preflight's
verdict is what the speedup does.

Vocabulary:

* a **root** is a layer whose output channels a config can select: a (non-depthwise) conv, a
  linear, an embedding, an LSTM/GRU (its hidden units) or a fused q/k/v projection (its heads);
* a **member** is a parameter slice that belongs to a channel and is removed with it (the root's
  weight rows and bias, norm affine parameters, depthwise conv filters, ...);
* a **consumer** is a parameter slice that *reads* the channel (the next layer's input columns);
* a **layer side** is a layer's output or input channels as the speedup shrinks them.

Example:
    >>> from nncompress.models.mnist import Net
    >>> graph = ChannelGraph.build(Net(), torch.randn(1, 1, 28, 28))
    >>> [(g.roots, g.channels, g.prunable) for g in graph.groups]
    [(('conv1',), 20, True), (('conv2',), 50, True), (('fc1',), 500, True), (('fc2',), 10, False)]
"""

from nncompress.graph.channel_graph import ChannelGraph, channel_groups
from nncompress.graph.records import ChannelGroup, ChannelSlice, LayerSide, UnsupportedOp
from nncompress.graph.trace import ExampleInputs, trace
from nncompress.graph.unsupported import unsupported_ops

__all__ = [
    "ChannelGraph",
    "ChannelGroup",
    "ChannelSlice",
    "ExampleInputs",
    "LayerSide",
    "UnsupportedOp",
    "channel_groups",
    "trace",
    "unsupported_ops",
]
