"""Parsing and validating an NNI-v3-style quantization config_list.

An entry selects layers (``op_types``/``op_names``/``op_names_re``, minus ``exclude_op_names``/
``exclude_op_types``) and says how they are quantized: which tensors (``target_names``), to what
(``quant_dtype``), how (``quant_scheme``) and at what grain (``granularity``). Later entries override
earlier ones for the layers they select; ``'exclude': True`` leaves the selected layers in float.

Errors reuse the pruning config's wording (:mod:`nncompress.config.messages`): each names the entry
index, the key, the bad value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nncompress.config.messages import bad_value, did_you_mean
from nncompress.config.selectors import (
    check_entry_list,
    check_exclude_settings,
    check_known_keys,
    parse_names,
    parse_selection,
)
from nncompress.errors import ConfigError, NoMatchError, UnknownLayerError

__all__ = [
    "DEFAULT_OP_TYPES",
    "GRANULARITIES",
    "QUANT_DTYPES",
    "QUANT_SCHEMES",
    "TARGET_NAMES",
    "VALID_KEYS",
    "QuantConfigEntry",
    "QuantConfigError",
    "QuantNoMatchError",
    "UnknownQuantLayerError",
    "parse_quant_config",
]


class QuantConfigError(ConfigError):
    """A quantization config_list entry is malformed or does not fit the model or the mode."""

    code = "invalid_quant_config"


class UnknownQuantLayerError(QuantConfigError, UnknownLayerError):
    """A quantization config names a layer the model does not have."""

    code = "unknown_layer"


class QuantNoMatchError(QuantConfigError, NoMatchError):
    """A quantization config entry, or the whole config, selects no quantizable layer."""

    code = "config_matches_nothing"


SELECTOR_KEYS: tuple[str, ...] = ("op_types", "op_names", "op_names_re")
EXCLUDE_LIST_KEYS: tuple[str, ...] = ("exclude_op_types", "exclude_op_names", "exclude_op_names_re")
SETTING_KEYS: tuple[str, ...] = ("target_names", "quant_dtype", "quant_scheme", "granularity")
VALID_KEYS: tuple[str, ...] = (*SELECTOR_KEYS, *EXCLUDE_LIST_KEYS, *SETTING_KEYS, "exclude")

# 'weight' is the layer's weight; '_input_' / '_output_' are its first input and its output (NNI's names).
TARGET_NAMES: tuple[str, ...] = ("weight", "_input_", "_output_")
QUANT_DTYPES: tuple[str, ...] = ("int8", "uint8")
QUANT_SCHEMES: tuple[str, ...] = ("affine", "symmetric")
# 'default' = weights per output channel, activations per tensor: the most accurate setting that
# onnxruntime's CPU integer kernels run (they take per-channel weight scales but one activation scale).
GRANULARITIES: tuple[str, ...] = ("default", "per_channel", "per_tensor")

# What op type 'default' stands for: the layers onnxruntime has integer kernels for.
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv1d", "Conv2d", "Linear", "LSTM")

# NNI keys that do not apply here, with the reason (better than "unknown key" for a pasted NNI config).
UNSUPPORTED_KEYS: dict[str, str] = {
    "quant_bits": "only 8-bit quantization is implemented; use 'quant_dtype': 'int8' or 'uint8'",
    "quant_types": "this is NNI v2's key; use v3's 'target_names' (['weight', '_input_', '_output_'])",
    "target_settings": "per-target settings are not implemented; split the entry in two instead",
    "fuse_names": "Conv+BatchNorm folding happens automatically during export",
    "sparse_ratio": "that is a pruning key; prune first, then quantize with a separate config",
    "sparsity": "that is a pruning key; prune first, then quantize with a separate config",
    "op_partial_names": "use 'op_names_re' (a regular expression) instead",
}

_EXAMPLE = "[{'op_types': ['Conv2d', 'Linear'], 'quant_dtype': 'int8'}]"


@dataclass(frozen=True)
class QuantConfigEntry:
    """One validated entry of a quantization config_list.

    Settings are ``None`` when the key was absent, so the mode's defaults (see
    :mod:`nncompress.quantize.resolve`) can fill them and messages can tell "given" from "default".

    Attributes:
        index: position in the config_list, used in every later message about this entry.
        op_types: module class names (``'Conv2d'``), possibly ``'default'``.
        op_names: exact module names from ``named_modules()``.
        op_names_re: regular expressions matched at the start of module names (``re.match``, as in NNI).
        exclude_op_types: class names removed from this entry's own match.
        exclude_op_names: module names removed from this entry's own match.
        exclude_op_names_re: regular expressions whose matches are removed from this entry.
        exclude: the entry leaves the layers it selects in float (undoing earlier entries).
        target_names: tensors to quantize, drawn from ``('weight', '_input_', '_output_')``.
        quant_dtype: ``'int8'`` or ``'uint8'``.
        quant_scheme: ``'affine'`` (zero point from min/max) or ``'symmetric'`` (zero point fixed).
        granularity: ``'default'``, ``'per_channel'`` or ``'per_tensor'`` (applies to weights).
    """

    index: int
    op_types: tuple[str, ...] | None = None
    op_names: tuple[str, ...] | None = None
    op_names_re: tuple[str, ...] | None = None
    exclude_op_types: tuple[str, ...] = ()
    exclude_op_names: tuple[str, ...] = ()
    exclude_op_names_re: tuple[str, ...] = ()
    exclude: bool = False
    target_names: tuple[str, ...] | None = None
    quant_dtype: str | None = None
    quant_scheme: str | None = None
    granularity: str | None = None

    @property
    def label(self) -> str:
        """How messages refer to this entry: ``config_list[2]``."""
        return f"config_list[{self.index}]"

    def to_dict(self) -> dict[str, Any]:
        """The entry as the user could have written it (absent keys left out, tuples as lists)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key == "index" or value is None or value == () or (key == "exclude" and not value):
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


def parse_quant_config(raw: object) -> tuple[QuantConfigEntry, ...]:
    """Validates a quantization config_list and normalises every entry.

    Args:
        raw: a list of dicts, e.g. ``[{'op_types': ['Conv2d', 'Linear'], 'quant_dtype': 'int8'},
            {'exclude': True, 'op_names': ['fc2']}]``. Parsed entries are returned unchanged.

    Returns:
        One :class:`QuantConfigEntry` per entry, in order.

    Raises:
        QuantConfigError: naming the entry index, the key, the bad value and what is allowed.
    """
    if isinstance(raw, Sequence) and raw and all(isinstance(e, QuantConfigEntry) for e in raw):
        return tuple(raw)  # type: ignore[arg-type]
    items = check_entry_list(raw, example=_EXAMPLE, error=QuantConfigError)
    return tuple(_parse_entry(index, item) for index, item in enumerate(items))


def _parse_entry(index: int, raw: object) -> QuantConfigEntry:
    if not isinstance(raw, Mapping):
        raise bad_value(index, None, raw, f"a dict such as {_EXAMPLE[1:-1]}", error=QuantConfigError)
    _check_keys(index, raw)
    exclude = raw.get("exclude", False)
    if not isinstance(exclude, bool):
        raise bad_value(index, "exclude", exclude, "True or False", error=QuantConfigError)
    if exclude:
        check_exclude_settings(
            index,
            raw,
            SETTING_KEYS,
            why="an exclude entry only keeps the layers it selects in float",
            expected="no quantization settings next to 'exclude': True",
            error=QuantConfigError,
        )
    selectors, excludes = parse_selection(
        index, raw, selector_keys=SELECTOR_KEYS, exclude_keys=EXCLUDE_LIST_KEYS, error=QuantConfigError
    )
    target_names = parse_names(index, raw, "target_names", error=QuantConfigError)
    for name in target_names or ():
        if name not in TARGET_NAMES:
            raise bad_value(
                index,
                "target_names",
                name,
                "a list drawn from " + ", ".join(repr(t) for t in TARGET_NAMES),
                hint=did_you_mean(name, TARGET_NAMES),
                error=QuantConfigError,
            )
    return QuantConfigEntry(
        index=index,
        op_types=selectors["op_types"],
        op_names=selectors["op_names"],
        op_names_re=selectors["op_names_re"],
        exclude_op_types=excludes["exclude_op_types"],
        exclude_op_names=excludes["exclude_op_names"],
        exclude_op_names_re=excludes["exclude_op_names_re"],
        exclude=exclude,
        target_names=target_names,
        quant_dtype=_parse_choice(index, raw, "quant_dtype", QUANT_DTYPES),
        quant_scheme=_parse_choice(index, raw, "quant_scheme", QUANT_SCHEMES),
        granularity=_parse_choice(index, raw, "granularity", GRANULARITIES),
    )


def _check_keys(index: int, raw: Mapping[object, object]) -> None:
    check_known_keys(
        index,
        raw,
        valid=VALID_KEYS,
        unsupported=UNSUPPORTED_KEYS,
        error=QuantConfigError,
        product="nncompress quantization",
    )


def _parse_choice(index: int, raw: Mapping[str, object], key: str, allowed: tuple[str, ...]) -> str | None:
    if key not in raw:
        return None
    value = raw[key]
    if value not in allowed or not isinstance(value, str):
        hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
        raise bad_value(
            index,
            key,
            value,
            "one of " + ", ".join(repr(a) for a in allowed),
            hint=hint,
            error=QuantConfigError,
        )
    return value
