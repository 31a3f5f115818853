"""What the command lines read from their arguments: an input shape and a config_list.

Shared by the engine's commands (``nncompress inspect``/``prune``) and the service's ``submit``, so
both accept and refuse the same things with the same messages.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nncompress.errors import ConfigError

__all__ = ["input_shape", "read_config_list"]


def input_shape(text: str) -> tuple[int, ...]:
    """An ``argparse`` type: ``1,1,28,28`` or ``1x1x28x28`` as a shape with a batch dimension.

    Raises:
        argparse.ArgumentTypeError: not integers, fewer than two dimensions, or one below 1.
    """
    try:
        dims = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, e.g. 1,1,28,28; got {text!r}"
        ) from None
    if len(dims) < 2 or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"need a batch dimension and at least one more, all ≥ 1; got {text!r}"
        )
    return dims


def read_config_list(value: str) -> list[dict[str, Any]]:
    """A config_list from JSON text or from the path of a JSON file; one entry may omit the brackets.

    Raises:
        ConfigError: the file cannot be read, the text is not JSON, or it is not a list of entries.
    """
    text = value
    if not value.lstrip().startswith(("[", "{")):
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {value}: {exc.strerror}", key="config") from exc
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the config is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}", key="config"
        ) from exc
    if isinstance(config, dict):
        config = [config]  # one entry without the list brackets
    if not isinstance(config, list):
        raise ConfigError("the config must be a JSON list of entries (an NNI config_list)", key="config")
    return config
