"""One normalised config_list entry, whatever NNI generation of keys it was written in."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ConfigEntry:
    """A validated config_list entry with v2 keys translated to their v3 meaning.

    Selector fields are ``None`` when the key was absent, so "not given" and "given" stay apart
    (an absent ``op_types`` means every type, an empty one cannot occur: the parser refuses it).

    Attributes:
        index: position in the config_list, used in every later message about this entry.
        op_types: module class names (``'Conv2d'``), possibly NNI's ``'default'``.
        op_names: exact module names from ``named_modules()``.
        op_partial_names: substrings; a module whose name contains one is selected (v2).
        op_names_re: regular expressions matched with ``re.match`` against module names (v3).
        exclude_op_types: class names removed from this entry's own match (v3).
        exclude_op_names: module names removed from this entry's own match (v3).
        exclude_op_names_re: regular expressions whose matches are removed from this entry (v3).
        exclude: when true the entry removes the layers it matches from what earlier entries chose (v2).
        sparse_ratio: fraction of each layer's weight to prune, or of the whole global group's.
        max_sparse_ratio: cap per layer (mainly for global groups).
        max_sparse_ratio_per_layer: v2's ``{layer name: cap}`` form of the cap, as sorted pairs.
        min_sparse_ratio: floor per layer.
        global_group_id: layers sharing it are ranked together; ``total_sparsity`` gets one per entry.
        dependency_group_id: layers sharing it prune the same channel indices.
        granularity: ``'default'``, ``'out_channel'``, ``'in_channel'`` or ``'element'``.
        target_names: parameters to mask, a subset of ``('weight', 'bias')``.
        source_keys: the keys as the user wrote them, for messages that quote the original.
    """

    index: int
    op_types: tuple[str, ...] | None = None
    op_names: tuple[str, ...] | None = None
    op_partial_names: tuple[str, ...] | None = None
    op_names_re: tuple[str, ...] | None = None
    exclude_op_types: tuple[str, ...] = ()
    exclude_op_names: tuple[str, ...] = ()
    exclude_op_names_re: tuple[str, ...] = ()
    exclude: bool = False
    sparse_ratio: float | None = None
    max_sparse_ratio: float | None = None
    max_sparse_ratio_per_layer: tuple[tuple[str, float], ...] = ()
    min_sparse_ratio: float | None = None
    global_group_id: str | None = None
    dependency_group_id: str | None = None
    granularity: str = "default"
    target_names: tuple[str, ...] = ("weight", "bias")
    source_keys: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How messages refer to this entry: ``config_list[2]``."""
        return f"config_list[{self.index}]"

    def max_for(self, layer_name: str) -> float | None:
        """The cap that applies to ``layer_name``: its own entry in the dict form, else the float form."""
        for name, cap in self.max_sparse_ratio_per_layer:
            if name == layer_name:
                return cap
        return self.max_sparse_ratio

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view in v3 terms (tuples become lists, the dict cap becomes a dict)."""
        out = asdict(self)
        out["max_sparse_ratio_per_layer"] = dict(self.max_sparse_ratio_per_layer)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out
