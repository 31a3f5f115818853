"""The vocabulary of a config_list: which keys exist, what they mean, which values they allow.

NNI has two generations of keys. v2 (``sparsity``, ``total_sparsity``, ``op_partial_names``,
``exclude``…) and v3 (``sparse_ratio``, ``op_names_re``, ``exclude_op_names``…) are both accepted and
normalised to one :class:`~nncompress.config.entry.ConfigEntry`; this module is the single table of
them, so the parser, its error messages and the docs cannot disagree.
"""

from __future__ import annotations

# Selectors: which modules an entry reaches. An entry needs at least one of these.
SELECTOR_KEYS: tuple[str, ...] = ("op_types", "op_names", "op_partial_names", "op_names_re")

# Removals inside one entry (v3). They narrow that entry's own match; they select nothing.
EXCLUDE_LIST_KEYS: tuple[str, ...] = ("exclude_op_types", "exclude_op_names", "exclude_op_names_re")

# Every way of saying "how sparse". At most one may appear in an entry.
#   sparsity / sparsity_per_layer (v2) and sparse_ratio (v3): each layer on its own.
#   total_sparsity (v2): one ratio shared by a global ranking across the entry's layers.
RATIO_KEYS: tuple[str, ...] = ("sparse_ratio", "sparsity_per_layer", "sparsity", "total_sparsity")

# Per-layer caps. v2's may be a float or a {layer name: float} dict; v3's is a float.
MAX_RATIO_KEYS: tuple[str, ...] = ("max_sparse_ratio", "max_sparsity_per_layer")

OTHER_KEYS: tuple[str, ...] = (
    "exclude",
    "min_sparse_ratio",
    "global_group_id",
    "dependency_group_id",
    "granularity",
    "target_names",
)

VALID_KEYS: tuple[str, ...] = (*SELECTOR_KEYS, *EXCLUDE_LIST_KEYS, *RATIO_KEYS, *MAX_RATIO_KEYS, *OTHER_KEYS)

# Keys NNI knows that nncompress deliberately does not implement, with the reason shown to the user
# (better than "unknown key" for someone pasting a config that works in NNI).
UNSUPPORTED_KEYS: dict[str, str] = {
    "sparse_threshold": "threshold-based pruning is not implemented; use 'sparse_ratio'",
    "target_settings": "per-target settings are not implemented; put 'sparse_ratio', 'granularity' "
    "and 'target_names' directly in the entry",
    "quant_types": "quantization is configured in the quantization spec, not in the pruning config_list",
    "quant_bits": "quantization is configured in the quantization spec, not in the pruning config_list",
    "quant_dtype": "quantization is configured in the quantization spec, not in the pruning config_list",
    "apply_method": "masks are always applied by multiplication",
    "internal_metric_block": "block metrics are not implemented",
}

# What `granularity` may say. NNI's meanings, on a weight of shape (out, in, *kernel):
#   default      the pruner picks: element-wise for Level, output channels for the channel pruners;
#   out_channel  whole slices along dim 0 (filters / output features);
#   in_channel   whole slices along dim 1 (input channels / features);
#   element      nncompress's explicit name for fine-grained (unstructured) masks, NNI's Level default.
# NNI's `per_channel` (for input/output targets) and block lists ([4, 4]) are not supported.
GRANULARITIES: tuple[str, ...] = ("default", "out_channel", "in_channel", "element")

# Parameters of a module that a config may name as pruning targets.
TARGET_NAMES: tuple[str, ...] = ("weight", "bias")
DEFAULT_TARGET_NAMES: tuple[str, ...] = ("weight", "bias")

# What NNI's op type 'default' stands for when pruning: the convolutions and linear layers.
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv1d", "Conv2d", "Conv3d", "Linear")
