"""Preflight: what a config would do to a model, computed without pruning anything.

It resolves the config_list to layers, traces the model once to find which output channels are
coupled (residual adds, concats, depthwise convs, a conv and its BatchNorm), and reports per layer
the channels it has now and the channels that would remain, plus the layers and ops the speedup
cannot take through. The HTTP API returns :meth:`PreflightReport.to_dict`; ``nncompress inspect``
prints :meth:`PreflightReport.to_table`.

Modules: ``preflight`` (the entry point: run the model, trace it, assemble the report),
``channels`` (how many channels each coupled group and each layer keeps), ``granularity`` (what a
pruner's ``'default'`` granularity means), ``report`` (the report's data classes) and ``table``
(its terminal rendering).

Example:
    >>> config = [{"sparsity_per_layer": 0.5, "op_types": ["Conv2d"]}]
    >>> report = preflight(Net(), config, torch.randn(1, 1, 28, 28))
    >>> [(r.name, r.channels, r.channels_after) for r in report.layers]
    [('conv1', 20, 10), ('conv2', 50, 25)]
"""

from nncompress.inspection.channels import kept_channels
from nncompress.inspection.preflight import ExampleInputError, preflight
from nncompress.inspection.report import GroupReport, Issue, LayerReport, PreflightReport

__all__ = [
    "ExampleInputError",
    "GroupReport",
    "Issue",
    "LayerReport",
    "PreflightReport",
    "kept_channels",
    "preflight",
]
