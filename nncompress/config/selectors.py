"""Entry checks that pruning and quantization configs share: known keys and layer selectors.

Both config kinds select layers the same way (names, regexes, types, and their exclusions), so
their errors read the same; only the ConfigError subclass differs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from nncompress.config.messages import bad_value, did_you_mean, jsonable, nearest, show, where
from nncompress.errors import ConfigError, UnknownLayerError

Names = tuple[str, ...]


def parse_names(
    index: int, raw: Mapping[str, object], key: str, *, error: type[ConfigError] = ConfigError
) -> Names | None:
    """The non-empty list of strings under ``key`` (deduplicated, in order), or None when absent."""
    if key not in raw:
        return None
    value = raw[key]
    expected = "a non-empty list of strings"
    if isinstance(value, str):
        raise bad_value(index, key, value, expected, hint=f"write [{value!r}]", error=error)
    if not isinstance(value, list | tuple):
        raise bad_value(index, key, value, expected, error=error)
    if not value:
        raise bad_value(index, key, value, expected, hint=f"remove {key!r} or name at least one", error=error)
    for item in value:
        if not isinstance(item, str) or not item:
            raise bad_value(
                index, key, value, expected, hint=f"{show(item)} is not a non-empty string", error=error
            )
    return tuple(dict.fromkeys(value))


def parse_selection(
    index: int,
    raw: Mapping[str, object],
    *,
    selector_keys: Sequence[str],
    exclude_keys: Sequence[str],
    error: type[ConfigError] = ConfigError,
) -> tuple[dict[str, Names | None], dict[str, Names]]:
    """Parses an entry's selectors and exclusions; an entry must select something.

    Args:
        index: the entry's position in the config_list.
        raw: the entry.
        selector_keys: keys that select layers (at least one must be present).
        exclude_keys: keys that remove layers from this entry's own selection.
        error: the ConfigError subclass to raise.

    Returns:
        ``(selectors, excludes)``: each key mapped to its names (None / () when absent).
    """
    selectors = {key: parse_names(index, raw, key, error=error) for key in selector_keys}
    if all(value is None for value in selectors.values()):
        raise error(
            f"{where(index)}: selects no layer; add one of "
            + ", ".join(repr(k) for k in selector_keys)
            + " (e.g. 'op_types': ['Conv2d', 'Linear'])",
            entry=index,
            key=None,
            value=jsonable(dict(raw)),
            expected="at least one of " + ", ".join(selector_keys),
        )
    excludes = {key: parse_names(index, raw, key, error=error) or () for key in exclude_keys}
    for key, patterns in (*selectors.items(), *excludes.items()):
        if key.endswith("_re"):
            for pattern in patterns or ():
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise bad_value(
                        index, key, pattern, "valid Python regular expressions", hint=str(exc), error=error
                    ) from None
    return selectors, excludes


def check_entry_list(
    raw: object, *, example: str, error: type[ConfigError] = ConfigError
) -> Sequence[object]:
    """Checks that a config_list is a non-empty list (a lone dict is told to be wrapped in one).

    Args:
        raw: the config_list as given.
        example: a one-entry config_list of the caller's kind, quoted in the errors.
        error: the ConfigError subclass to raise.

    Returns:
        ``raw``, now known to be a non-empty sequence (its entries are not checked yet).
    """
    if isinstance(raw, Mapping):
        raise bad_value(
            None, None, raw, "a list of dicts", hint=f"wrap the entry in a list: [{dict(raw)!r}]", error=error
        )
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
        raise bad_value(None, None, raw, f"a list of dicts such as {example}", error=error)
    if len(raw) == 0:
        raise error(
            f"config_list: is empty; expected at least one entry such as {example}",
            entry=None,
            key=None,
            value=[],
            expected="a non-empty list of dicts",
        )
    return raw


def check_exclude_settings(
    index: int,
    raw: Mapping[str, object],
    keys: Sequence[str],
    *,
    why: str,
    expected: str,
    error: type[ConfigError] = ConfigError,
) -> None:
    """Refuses settings in an ``'exclude': True`` entry, which only takes layers out of the others.

    Args:
        index: the entry's position in the config_list.
        raw: the entry.
        keys: the settings an exclude entry may not carry.
        why: what an exclude entry does instead, for the message.
        expected: the error's ``expected`` context.
        error: the ConfigError subclass to raise.
    """
    for key in keys:
        if key in raw:
            raise error(
                f"{where(index, key)}: not allowed in an 'exclude' entry (got {show(raw[key])}); {why}",
                entry=index,
                key=key,
                value=jsonable(raw[key]),
                expected=expected,
            )


def check_known_keys(
    index: int,
    raw: Mapping[object, object],
    *,
    valid: Sequence[str],
    unsupported: Mapping[str, str],
    error: type[ConfigError] = ConfigError,
    product: str = "nncompress",
) -> None:
    """Refuses non-string keys, NNI keys this product does not support (with the reason), and
    unknown keys (with the nearest valid ones)."""
    for key in raw:
        if not isinstance(key, str):
            raise bad_value(
                index, None, key, "string keys", hint="keys are names such as 'op_types'", error=error
            )
        if key in valid:
            continue
        expected = "one of " + ", ".join(valid)
        context = {"entry": index, "key": key, "value": jsonable(raw[key]), "expected": expected}
        if key in unsupported:
            raise error(f"{where(index, key)}: not supported by {product}: {unsupported[key]}", **context)
        suggestion = did_you_mean(key, valid)
        raise error(
            f"{where(index, key)}: unknown key"
            + (f"; {suggestion}" if suggestion else ".")
            + " Valid keys: "
            + ", ".join(valid),
            **context,
        )


def name_matches(pattern: str, name: str) -> bool:
    """Whether an ``op_names_re`` pattern selects ``name``: matched at its start (``re.match``), as in NNI."""
    return re.match(pattern, name) is not None


def select_layers(
    type_of: Mapping[str, str],
    *,
    op_names: Names | None,
    op_names_re: Names | None,
    op_types: set[str] | None,
    exclude_op_names: Names = (),
    exclude_op_names_re: Names = (),
    exclude_op_types: set[str] | frozenset[str] = frozenset(),
    op_partial_names: Names | None = None,
) -> set[str]:
    """The layers one entry selects: ``(names ∪ partial names ∪ regexes, or all) ∩ op_types − exclusions``.

    The one selection rule for pruning and quantization configs, so the same entry picks the same layers in
    both (``op_names_re: ["fc"]`` selects ``fc1`` and ``fc2`` for either).

    Args:
        type_of: each candidate layer's name mapped to its type name, in module order.
        op_names, op_names_re, op_partial_names: the name selectors; all None selects every layer.
        op_types: type names to keep (already expanded from ``"default"``), or None for any type.
        exclude_op_names, exclude_op_names_re, exclude_op_types: what the entry removes again.

    Returns:
        The selected names (unordered; callers order them by module).
    """
    if op_names is None and op_names_re is None and op_partial_names is None:
        names = set(type_of)
    else:
        names = set(op_names or ())
        for part in op_partial_names or ():
            names.update(n for n in type_of if part in n)
        for pattern in op_names_re or ():
            names.update(n for n in type_of if name_matches(pattern, n))
    if op_types is not None:
        names = {n for n in names if type_of[n] in op_types}
    names -= set(exclude_op_names)
    return {
        n
        for n in names
        if type_of[n] not in exclude_op_types and not any(name_matches(p, n) for p in exclude_op_names_re)
    }


# How many of the model's layer names an unknown-name error lists before "…".
LISTED_NAMES = 12


def check_layer_names(
    index: int,
    key: str,
    names: Sequence[str],
    modules: Mapping[str, object],
    *,
    error: type[ConfigError] = UnknownLayerError,
) -> None:
    """Raises ``error`` for the first of ``names`` that is not a layer of the model.

    Args:
        index: the config entry's position, for the message.
        key: the key that named the layers (``op_names``, ``exclude_op_names`` ...).
        names: the names the entry gives.
        modules: the model's layers by name (``dict(model.named_modules())`` without the root).
        error: the config kind's error class (pruning or quantization).
    """
    for name in names:
        if name in modules:
            continue
        suggestions = did_you_mean(name, modules)
        listed = list(modules)[:LISTED_NAMES]
        more = " …" if len(modules) > LISTED_NAMES else ""
        raise error(
            f"{where(index, key)}: the model has no layer named {name!r}"
            + (f"; {suggestions}" if suggestions else "")
            + f" (its layers: {', '.join(listed)}{more})",
            entry=index,
            key=key,
            value=name,
            expected="a module name from model.named_modules()",
            suggestions=nearest(name, modules),
        )
