"""Building config errors that name the entry, the key, the bad value and what is allowed.

Kept apart from the parser so the resolver reports with the same shape and wording.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from typing import Any

from nncompress.errors import ConfigError

_MAX_SHOWN = 80


def show(value: object) -> str:
    """A short, unambiguous rendering of a user value: numbers bare, anything else with its type.

    ``1.5`` stays ``1.5``; ``'0.5'`` becomes ``str '0.5'`` so a quoted number is visibly a string.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    text = repr(value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return f"{type(value).__name__} {text}"


def jsonable(value: object) -> Any:
    """``value`` itself when it survives JSON (errors travel to HTTP clients), else its repr."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def where(index: int | None, key: str | None = None) -> str:
    """The location prefix: ``config_list``, ``config_list[1]`` or ``config_list[1]['sparsity']``."""
    if index is None:
        return "config_list"
    if key is None:
        return f"config_list[{index}]"
    return f"config_list[{index}][{key!r}]"


def bad_value(
    index: int | None,
    key: str | None,
    value: object,
    expected: str,
    *,
    hint: str = "",
    error: type[ConfigError] = ConfigError,
) -> ConfigError:
    """An error for a value of the wrong type or range.

    Args:
        index: entry position, or ``None`` for the list itself.
        key: the offending key, or ``None`` for the entry as a whole.
        value: what the user wrote.
        expected: what is allowed, phrased to follow "expected".
        hint: an optional sentence on how to fix it.
        error: the ConfigError subclass to build.

    Returns:
        The error (the caller raises it, so tracebacks point at the check).
    """
    message = f"{where(index, key)}: expected {expected}, got {show(value)}"
    if hint:
        message += f"; {hint}"
    return error(message, entry=index, key=key, value=jsonable(value), expected=expected)


def nearest(word: str, candidates: Iterable[str], *, n: int = 3) -> list[str]:
    """The closest spellings of ``word`` among ``candidates`` (difflib ratio), best first."""
    pool = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(word, pool, n=n, cutoff=0.6)
    if close:
        return close
    # Module names are long dotted paths where a typo in one segment scores low on the whole
    # string; fall back to names sharing the last segment, then a looser cutoff.
    tail = word.rsplit(".", 1)[-1]
    same_tail = [c for c in pool if c.rsplit(".", 1)[-1] == tail]
    return same_tail[:n] or difflib.get_close_matches(word, pool, n=n, cutoff=0.3)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"did you mean 'x'?"`` / ``"did you mean 'x', 'y'?"``, or an empty string when nothing is close."""
    close = nearest(word, candidates)
    if not close:
        return ""
    return "did you mean " + ", ".join(repr(c) for c in close) + "?"
