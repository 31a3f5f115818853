"""Telling a state_dict from a pickled module inside a ``torch.save`` zip, without unpickling.

``pickletools.genops`` only decodes opcodes; nothing is imported or called. A state_dict refers to
tensor-rebuilding globals only; anything else (an ``nn.Module`` class, ``os.system``) means the
file is a pickled object that only a worker with ``allow_pickle`` may load.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path
from typing import Any, cast

import torch

_WEIGHT_GLOBALS = frozenset(
    {
        "collections.OrderedDict",
        "torch.Size",
        "torch.device",
        "torch._tensor._rebuild_from_type_v2",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        "torch.nn.parameter.Parameter",
    }
)
# A data.pkl larger than this is not a state_dict index (tensor data lives in separate entries).
MAX_INDEX_BYTES = 64 * 1024 * 1024


def _is_weight_global(name: str) -> bool:
    if name in _WEIGHT_GLOBALS or name.startswith("torch._utils._rebuild_"):
        return True
    module, _, attr = name.rpartition(".")
    if module != "torch":
        return False
    return attr.endswith("Storage") or isinstance(getattr(torch, attr, None), torch.dtype)


def referenced_globals(data: bytes) -> set[str]:
    """The ``module.name`` globals a pickle stream would import (GLOBAL and STACK_GLOBAL)."""
    found: set[str] = set()
    strings: list[str] = []
    memo: dict[int, str] = {}
    for opcode, raw_arg, _pos in pickletools.genops(data):
        name, arg = opcode.name, cast(Any, raw_arg)
        if name == "GLOBAL":
            found.add(str(arg).replace(" ", "."))
        elif name in {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"}:
            strings.append(str(arg))
        elif name in {"BINPUT", "LONG_BINPUT", "PUT"} and strings:
            memo[int(arg)] = strings[-1]
        elif name == "MEMOIZE" and strings:
            memo[len(memo)] = strings[-1]
        elif name in {"BINGET", "LONG_BINGET", "GET"} and int(arg) in memo:
            strings.append(memo[int(arg)])
        elif name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]) if len(strings) >= 2 else "<unknown>")
    return found


def torch_zip_kind(path: Path) -> str:
    """``"state_dict"`` when the archive's pickle only rebuilds tensors, else ``"pickle"``."""
    try:
        with zipfile.ZipFile(path) as archive:
            index = next(n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
            if archive.getinfo(index).file_size > MAX_INDEX_BYTES:
                return "pickle"
            data = archive.read(index)
        names = referenced_globals(data)
    except (zipfile.BadZipFile, StopIteration, ValueError, OSError):
        return "pickle"
    return "state_dict" if all(_is_weight_global(n) for n in names) else "pickle"
