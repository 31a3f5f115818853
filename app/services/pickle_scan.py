"""Telling a state_dict from a pickled module in ``torch.save`` output, without unpickling.

``pickletools.genops`` only decodes opcodes; nothing is imported or called. A state_dict refers to
tensor-rebuilding globals only; anything else (an ``nn.Module`` class, ``os.system``) means the
file is a pickled object that only a worker with ``allow_pickle`` may load.

Two layouts: the zip ``torch.save`` has written since torch 1.6 (one ``data.pkl`` index, tensor
data in other entries), and the legacy stream (``_use_new_zipfile_serialization=False``): five
pickles back to back (magic number, protocol, system info, the object, its storage keys) followed
by raw storage bytes, which are never decoded here.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path
from typing import IO, Any, cast

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


def referenced_globals(data: bytes | IO[bytes]) -> set[str]:
    """The ``module.name`` globals a pickle would import (GLOBAL and STACK_GLOBAL).

    ``data`` is one pickle's bytes, or a stream positioned at a pickle: it is read up to and
    including that pickle's STOP opcode, and left positioned after it.
    """
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


# torch.serialization.MAGIC_NUMBER: the first pickle of every legacy torch.save stream.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PICKLES = 5  # magic, protocol version, sys_info, the object, the storage keys


class _BoundedReader:
    """The ``read``/``readline`` that ``genops`` uses, refusing to go past ``limit`` bytes."""

    def __init__(self, fh: IO[bytes], limit: int) -> None:
        self._fh, self._left = fh, limit

    def _take(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            raise ValueError("the pickle index is larger than any state_dict's")
        return data

    def read(self, n: int = -1) -> bytes:
        return self._take(self._fh.read(self._left + 1 if n < 0 else min(n, self._left + 1)))

    def readline(self) -> bytes:
        return self._take(self._fh.readline(self._left + 1))


def legacy_torch_kind(path: Path) -> str:
    """``"state_dict"`` when a legacy (non-zip) ``torch.save`` stream only rebuilds tensors, else
    ``"pickle"`` (another global, no torch magic number, or an index that does not parse)."""
    names: set[str] = set()
    try:
        with open(path, "rb") as fh:
            reader = cast(IO[bytes], _BoundedReader(fh, MAX_INDEX_BYTES))
            magic = [arg for _op, arg, _pos in pickletools.genops(reader)]
            if LEGACY_MAGIC not in magic:
                return "pickle"  # a plain pickle, not written by torch.save
            for _ in range(_LEGACY_PICKLES - 1):
                names |= referenced_globals(reader)
    except Exception:  # any stream genops cannot decode is not a state_dict this scan can vouch for
        return "pickle"
    return "state_dict" if all(_is_weight_global(n) for n in names) else "pickle"
