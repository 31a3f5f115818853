"""Which format a model file is, from its leading bytes, never from its name.

A pickle renamed ``model.safetensors`` is still a pickle and is refused as one by the loader
(:mod:`nncompress.io.intake`). Each test reads as little as it needs: a zip's member names, a
safetensors header (bounded), or an ONNX ``ModelProto``'s first fields before the protobuf parser
sees the file.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from nncompress.errors import ModelLoadError

__all__ = ["detect_format"]

# A safetensors header above this is not a real model file (the format itself caps it at 100 MB).
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024

_MAX_ONNX_BYTES = 2 * 1024**3
_MAX_PT2_TAG = 64


def detect_format(path: str | Path) -> str:
    """Names the format of a model file by its leading bytes.

    Args:
        path: the file.

    Returns:
        One of ``"safetensors"``, ``"torch_zip"`` (``torch.save`` zip archive), ``"pickle"`` (a raw
        pickle stream, including the legacy ``torch.save`` format), ``"onnx"``, ``"pt2"`` (a
        ``torch.export.save`` archive) or ``"hf_dir"`` (a model folder, or a zip of one, holding
        ``config.json`` and safetensors weights).

    Raises:
        ModelLoadError: the file is empty, unreadable or none of these.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").is_file():
            return "hf_dir"
        raise ModelLoadError("the folder has no config.json, so it is not a model folder", path=str(p))
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise ModelLoadError(f"cannot read the model file: {exc.strerror}", path=str(p)) from exc
    if not head:
        raise ModelLoadError("the model file is empty", path=str(p))
    if head.startswith(b"PK\x03\x04"):
        return _zip_format(p)
    # safetensors before pickle: a header length of 640–1535 bytes is stored as 0x80 0x02..0x05,
    # which reads like a pickle PROTO opcode. The safetensors test parses the JSON header, so it
    # cannot mistake a pickle for safetensors.
    if _is_safetensors(p, head, size):
        return "safetensors"
    # Pickle protocol 2+ opens with PROTO (0x80) and the protocol number.
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    # A serialised ModelProto opens with field 1 (ir_version, a varint): tag byte 0x08. Checking it
    # first keeps arbitrary large files from being handed to the protobuf parser whole; protobuf
    # itself caps a message at 2 GiB (bigger models need external data, which is refused anyway).
    if head[0] == 0x08 and size < _MAX_ONNX_BYTES and _is_onnx(p):
        return "onnx"
    raise ModelLoadError(
        "unrecognised model format: expected safetensors, a torch.save file, or ONNX", path=str(p)
    )


def _zip_format(p: Path) -> str:
    """``pt2``, ``torch_zip`` or ``hf_dir`` from a zip's member names (and the pt2 tag's few bytes)."""
    from nncompress.io.hf_archive import is_hf_zip

    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
            # torch.export.save writes <name>/archive_format holding "pt2" (torch 2.6+); older
            # releases wrote serialized_exported_program.json.
            tags = [n for n in names if n == "archive_format" or n.endswith("/archive_format")]
            small = bool(tags) and zf.getinfo(tags[0]).file_size <= _MAX_PT2_TAG
            if small and zf.read(tags[0]).strip() == b"pt2":
                return "pt2"
            if any(n.endswith("serialized_exported_program.json") for n in names):
                return "pt2"
            if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                return "torch_zip"
    except (zipfile.BadZipFile, OSError, KeyError):
        pass
    if is_hf_zip(p):
        return "hf_dir"
    raise ModelLoadError(
        "the file is a zip archive but neither torch.save output (no data.pkl), a torch.export archive, "
        "nor a model folder (config.json + model.safetensors)",
        path=str(p),
    )


def _is_safetensors(p: Path, head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    if not (2 <= length <= _MAX_SAFETENSORS_HEADER and 8 + length <= size and head[8:9] == b"{"):
        return False
    with open(p, "rb") as fh:
        fh.seek(8)
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(header, dict)


# ModelProto's top-level fields and their protobuf wire types (0 varint, 2 length-delimited).
_ONNX_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_ONNX_GRAPH_FIELD = 7


def _read_varint(fh: BinaryIO) -> int | None:
    value = 0
    for shift in range(0, 64, 7):
        byte = fh.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
    return None


def _is_onnx(p: Path) -> bool:
    """Tells whether the file's top-level protobuf fields are those of an ONNX ModelProto.

    Walks the fields by seeking over their payloads, so a file of any size is sniffed in a few
    reads: the API process must not hand a 1 GiB upload to the protobuf parser whole (measured:
    +1 GiB of memory). The fields must tile the file exactly and include an ir_version and a graph;
    the worker still parses the model fully when it loads it.
    """
    size = p.stat().st_size
    seen: set[int] = set()
    with open(p, "rb") as fh:
        while fh.tell() < size:
            tag = _read_varint(fh)
            if tag is None:
                return False
            field, wire_type = tag >> 3, tag & 7
            if _ONNX_MODEL_FIELDS.get(field) != wire_type:
                return False
            value = _read_varint(fh)
            if value is None:
                return False
            if wire_type == 2:
                if fh.tell() + value > size:
                    return False
                fh.seek(value, 1)
            elif field == 1 and not 1 <= value <= 1000:
                return False
            seen.add(field)
    return 1 in seen and _ONNX_GRAPH_FIELD in seen
