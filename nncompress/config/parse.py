"""Parsing and validating an NNI-style config_list into :class:`ConfigEntry` objects.

Validation is model-independent here: types, ranges, unknown keys, conflicting keys. Whether the
names exist in a model is the resolver's job (:mod:`nncompress.config.resolve`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from nncompress.config.entry import ConfigEntry
from nncompress.config.keys import (
    DEFAULT_TARGET_NAMES,
    EXCLUDE_LIST_KEYS,
    GRANULARITIES,
    MAX_RATIO_KEYS,
    RATIO_KEYS,
    SELECTOR_KEYS,
    TARGET_NAMES,
    UNSUPPORTED_KEYS,
    VALID_KEYS,
)
from nncompress.config.messages import bad_value, did_you_mean, jsonable, where
from nncompress.config.selectors import (
    check_entry_list,
    check_exclude_settings,
    check_known_keys,
    parse_names,
    parse_selection,
)
from nncompress.errors import ConfigError

_EXAMPLE = "[{'sparse_ratio': 0.5, 'op_types': ['Conv2d', 'Linear']}]"
# Keys that only make sense when the entry prunes something; an `exclude` entry refuses them.
_PRUNING_KEYS: tuple[str, ...] = (
    *RATIO_KEYS,
    *MAX_RATIO_KEYS,
    "min_sparse_ratio",
    "global_group_id",
    "dependency_group_id",
    "granularity",
    "target_names",
)

_NONE_MEANS_ABSENT: tuple[str, ...] = (
    "max_sparse_ratio",
    "max_sparsity_per_layer",
    "min_sparse_ratio",
    "global_group_id",
    "dependency_group_id",
)


def parse_config_list(raw: object) -> tuple[ConfigEntry, ...]:
    """Validates an NNI v2/v3 config_list and normalises every entry.

    Args:
        raw: a list (or tuple) of dicts as NNI accepts it, e.g.
            ``[{'sparsity_per_layer': 0.5, 'op_types': ['Conv2d']}, {'exclude': True, 'op_names': ['fc2']}]``.
            An already parsed tuple of :class:`ConfigEntry` is returned unchanged.

    Returns:
        One :class:`ConfigEntry` per entry, in order.

    Raises:
        ConfigError: naming the entry index, the key, the bad value and what is allowed.
    """
    if isinstance(raw, Sequence) and raw and all(isinstance(e, ConfigEntry) for e in raw):
        return tuple(raw)  # type: ignore[arg-type]
    items = check_entry_list(raw, example=_EXAMPLE)
    entries = tuple(_parse_entry(index, item) for index, item in enumerate(items))
    _check_shared_ratio(entries, "global_group_id")
    _check_shared_ratio(entries, "dependency_group_id")
    return entries


def _parse_entry(index: int, raw: object) -> ConfigEntry:
    if not isinstance(raw, Mapping):
        raise bad_value(index, None, raw, f"a dict such as {_EXAMPLE[1:-1]}")
    _check_keys(index, raw)
    # NNI's own expanded configs spell "no cap / no group" as None; read that as "key absent".
    raw = {k: v for k, v in raw.items() if not (v is None and k in _NONE_MEANS_ABSENT)}

    exclude = _parse_bool(index, raw, "exclude")
    if exclude:
        check_exclude_settings(
            index,
            raw,
            _PRUNING_KEYS,
            why="an exclude entry only removes the layers it selects, so put the sparsity in another entry",
            expected="no pruning settings next to 'exclude': True",
        )

    selectors, excludes = parse_selection(
        index, raw, selector_keys=SELECTOR_KEYS, exclude_keys=EXCLUDE_LIST_KEYS
    )

    ratio, ratio_key = _parse_ratio(index, raw, exclude)
    max_ratio, max_per_layer = _parse_max(index, raw)
    min_ratio = _parse_unit(index, raw, "min_sparse_ratio", closed=True)
    global_group = _parse_group_id(index, raw, "global_group_id")
    if ratio_key == "total_sparsity" and global_group is None:
        # v2's total_sparsity ranks the entry's layers together: that is a global group of its own.
        global_group = where(index)
    _check_bounds(index, ratio, ratio_key, max_ratio, max_per_layer, min_ratio, global_group)

    return ConfigEntry(
        index=index,
        op_types=selectors["op_types"],
        op_names=selectors["op_names"],
        op_partial_names=selectors["op_partial_names"],
        op_names_re=selectors["op_names_re"],
        exclude_op_types=excludes["exclude_op_types"],
        exclude_op_names=excludes["exclude_op_names"],
        exclude_op_names_re=excludes["exclude_op_names_re"],
        exclude=exclude,
        sparse_ratio=ratio,
        max_sparse_ratio=max_ratio,
        max_sparse_ratio_per_layer=max_per_layer,
        min_sparse_ratio=min_ratio,
        global_group_id=global_group,
        dependency_group_id=_parse_group_id(index, raw, "dependency_group_id"),
        granularity=_parse_granularity(index, raw),
        target_names=_parse_target_names(index, raw),
        source_keys=tuple(str(k) for k in raw),
    )


def _check_keys(index: int, raw: Mapping[object, object]) -> None:
    check_known_keys(index, raw, valid=VALID_KEYS, unsupported=UNSUPPORTED_KEYS)
    for group in (RATIO_KEYS, MAX_RATIO_KEYS):
        present = [k for k in group if k in raw]
        if len(present) > 1:
            first, second = present[0], present[1]
            raise ConfigError(
                f"{where(index, second)}: conflicts with {first!r} in the same entry; both set the "
                f"{'sparsity' if group is RATIO_KEYS else 'per-layer cap'}, keep only one",
                entry=index,
                key=second,
                value=jsonable(raw[second]),
                expected=f"only one of {', '.join(group)}",
                conflicts_with=first,
            )


def _parse_bool(index: int, raw: Mapping[str, object], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise bad_value(index, key, value, "True or False")
    return value


def _is_number(value: object) -> bool:
    # bool is an int subclass; True as a sparsity is a mistake, not 1.0.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_unit(index: int, raw: Mapping[str, object], key: str, *, closed: bool) -> float | None:
    """A number in [0, 1] (``closed``) or [0, 1) (a sparsity of 1 would remove the whole layer)."""
    if key not in raw:
        return None
    value = raw[key]
    upper_ok = closed and _is_number(value) and value == 1
    if not _is_number(value) or not (0 <= value < 1 or upper_ok):  # type: ignore[operator]
        raise bad_value(index, key, value, f"a number in [0, 1{']' if closed else ')'}")
    return float(value)  # type: ignore[arg-type]


def _parse_ratio(index: int, raw: Mapping[str, object], exclude: bool) -> tuple[float | None, str | None]:
    key = next((k for k in RATIO_KEYS if k in raw), None)
    if key is None:
        if exclude:
            return None, None
        raise ConfigError(
            f"{where(index)}: sets no sparsity; add 'sparse_ratio' (v2: 'sparsity_per_layer' or "
            "'total_sparsity'), or 'exclude': True to leave the selected layers unpruned",
            entry=index,
            key=None,
            value=jsonable(dict(raw)),
            expected="one of " + ", ".join(RATIO_KEYS) + " or 'exclude': True",
        )
    return _parse_unit(index, raw, key, closed=False), key


def _parse_max(index: int, raw: Mapping[str, object]) -> tuple[float | None, tuple[tuple[str, float], ...]]:
    if "max_sparsity_per_layer" in raw and isinstance(raw["max_sparsity_per_layer"], Mapping):
        caps: list[tuple[str, float]] = []
        for name, cap in raw["max_sparsity_per_layer"].items():  # type: ignore[union-attr]
            if not isinstance(name, str) or not _is_number(cap) or not 0 <= cap <= 1:
                raise bad_value(
                    index,
                    "max_sparsity_per_layer",
                    {name: cap},
                    "a number in [0, 1] or a dict of layer name -> number in [0, 1]",
                )
            caps.append((name, float(cap)))
        return None, tuple(sorted(caps))
    key = next((k for k in MAX_RATIO_KEYS if k in raw), None)
    if key is None:
        return None, ()
    if key == "max_sparsity_per_layer" and not _is_number(raw[key]):
        raise bad_value(
            index, key, raw[key], "a number in [0, 1] or a dict of layer name -> number in [0, 1]"
        )
    return _parse_unit(index, raw, key, closed=True), ()


def _check_bounds(
    index: int,
    ratio: float | None,
    ratio_key: str | None,
    max_ratio: float | None,
    max_per_layer: tuple[tuple[str, float], ...],
    min_ratio: float | None,
    global_group: str | None,
) -> None:
    if min_ratio is not None and max_ratio is not None and min_ratio > max_ratio:
        raise bad_value(index, "min_sparse_ratio", min_ratio, f"a number <= max_sparse_ratio ({max_ratio})")
    if ratio is None:
        return
    # With every layer capped at `max`, no ranking can reach more than `max` in total (and
    # symmetrically for `min`), so these bounds are contradictions, not preferences.
    if max_ratio is not None and ratio > max_ratio:
        raise bad_value(index, ratio_key, ratio, f"a number <= the per-layer cap {max_ratio}")
    if min_ratio is not None and ratio < min_ratio:
        raise bad_value(index, ratio_key, ratio, f"a number >= min_sparse_ratio {min_ratio}")
    if global_group is None:
        for name, cap in max_per_layer:
            if cap < ratio:
                raise bad_value(
                    index,
                    "max_sparsity_per_layer",
                    {name: cap},
                    f"caps >= the sparsity {ratio} (each layer is pruned to exactly that)",
                    hint="caps only matter with 'total_sparsity' or a 'global_group_id'",
                )


def _parse_group_id(index: int, raw: Mapping[str, object], key: str) -> str | None:
    if key not in raw:
        return None
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise bad_value(index, key, value, "a non-empty string or an integer")
    return str(value)


def _parse_granularity(index: int, raw: Mapping[str, object]) -> str:
    value = raw.get("granularity", "default")
    allowed = "one of " + ", ".join(repr(g) for g in GRANULARITIES)
    if isinstance(value, (list, tuple)):
        raise bad_value(index, "granularity", value, allowed, hint="block sparsity is not supported")
    if value not in GRANULARITIES:
        hint = did_you_mean(value, GRANULARITIES) if isinstance(value, str) else ""
        if value == "per_channel":
            hint = "'per_channel' applies to inputs/outputs, which nncompress does not prune"
        raise bad_value(index, "granularity", value, allowed, hint=hint)
    return str(value)


def _parse_target_names(index: int, raw: Mapping[str, object]) -> tuple[str, ...]:
    names = parse_names(index, raw, "target_names")
    if names is None:
        return DEFAULT_TARGET_NAMES
    for name in names:
        if name not in TARGET_NAMES:
            raise bad_value(
                index,
                "target_names",
                name,
                "a list drawn from " + ", ".join(repr(t) for t in TARGET_NAMES),
                hint="inputs/outputs ('_input_', '_output_') are not pruned by nncompress",
            )
    return names


def _check_shared_ratio(entries: tuple[ConfigEntry, ...], field: str) -> None:
    """Entries sharing a group id must agree on the ratio (NNI requires it, and it is the group's)."""
    seen: dict[str, ConfigEntry] = {}
    for entry in entries:
        group = getattr(entry, field)
        if group is None or entry.sparse_ratio is None:
            continue
        first = seen.setdefault(group, entry)
        if first.sparse_ratio != entry.sparse_ratio:
            raise ConfigError(
                f"{where(entry.index)}: {field} {group!r} has sparsity {entry.sparse_ratio} here but "
                f"{first.sparse_ratio} in {first.label}; entries of one group must use the same sparsity",
                entry=entry.index,
                key=field,
                value=group,
                expected=f"sparsity {first.sparse_ratio} (as in {first.label})",
            )
