"""The command lines' readers, shared by the engine's commands and the service's submit."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from app.cli import submit_cmds
from nncompress.cli import engine_cmds
from nncompress.cli.inputs import input_shape, read_config_list
from nncompress.errors import ConfigError


def test_shapes() -> None:
    assert input_shape("1,1,28,28") == input_shape("1x1x28x28") == (1, 1, 28, 28)
    for bad in ("28", "1,0", "1,-1", "a,b"):
        with pytest.raises(argparse.ArgumentTypeError):
            input_shape(bad)


def test_config_from_text_or_file(tmp_path: Path) -> None:
    entry = {"sparse_ratio": 0.5, "op_types": ["Conv2d"]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps([entry]))
    assert read_config_list(str(path)) == read_config_list(json.dumps([entry])) == [entry]
    assert read_config_list(json.dumps(entry)) == [entry]  # one entry, no brackets
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_config_list("[{oops")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        read_config_list(str(tmp_path / "missing.json"))
    path.write_text("3")
    with pytest.raises(ConfigError, match="JSON list of entries"):
        read_config_list(str(path))


def test_engine_and_service_commands_read_arguments_alike() -> None:
    # They had two copies that drifted: submit took a 1-d shape and refused a single entry.
    assert not hasattr(submit_cmds, "_shape") and not hasattr(engine_cmds, "_shape")
    assert submit_cmds.input_shape is engine_cmds.input_shape is input_shape
    assert submit_cmds.read_config_list is engine_cmds.read_config_list is read_config_list
