"""NNI-style config_list: parsing, validation, and resolution to a model's layers.

Example:
    >>> from nncompress.config import resolve_config
    >>> resolved = resolve_config(model, [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}])
    >>> resolved.targets["conv1"].sparse_ratio
    0.5
"""

from nncompress.config.entry import ConfigEntry
from nncompress.config.keys import DEFAULT_OP_TYPES, GRANULARITIES, VALID_KEYS
from nncompress.config.parse import parse_config_list
from nncompress.config.resolve import LayerTarget, ResolvedConfig, UnprunableLayerError, resolve_config

__all__ = [
    "DEFAULT_OP_TYPES",
    "GRANULARITIES",
    "VALID_KEYS",
    "ConfigEntry",
    "LayerTarget",
    "ResolvedConfig",
    "UnprunableLayerError",
    "parse_config_list",
    "resolve_config",
]
