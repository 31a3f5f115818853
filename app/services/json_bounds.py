"""Bounded checks of JSON the uploader controls (a safetensors header, a config.json), run before any
recursive parser sees it.

``json.loads`` recurses once per nesting level: a header of 100,000 ``[`` raises RecursionError
(a 500, and a reset connection) instead of a clear refusal. The depth is measured here without
parsing: string literals are blanked by one regular expression, then the brackets' running sum
gives the depth, vectorised: about 1 s for a 100 MB header of brackets or of one long string
(measured on this project's 2-core CI machine), a few seconds for 60 MB of escapes.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from core.errors import InvalidUpload

# A safetensors header is {name: {dtype, shape: [...], data_offsets: [...]}, __metadata__: {str: str}}:
# depth 3. A transformers config.json nests a few levels more; 64 is far beyond both.
MAX_JSON_DEPTH = 64
# safetensors itself caps headers at 100 MB; the largest real ones (70B models) are about 1 MB.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# The unrolled form of "(?:[^"\\]|\\.)*": one pass per run of plain characters, not one per byte.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STEP = np.zeros(256, np.int8)
_STEP[list(b"[{")] = 1  # one level deeper
_STEP[list(b"]}")] = -1


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (0 for a scalar); strings do not count."""
    codes = np.frombuffer(_STRING.sub(b'""', raw), np.uint8)
    return int(np.cumsum(_STEP[codes], dtype=np.int64).max(initial=0))


def check_json_depth(raw: bytes, *, what: str) -> None:
    """Raises InvalidUpload (422) when ``raw`` nests deeper than :data:`MAX_JSON_DEPTH`."""
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise InvalidUpload(
            f"{what} nests {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted",
            errors=[{"field": what, "depth": depth, "maximum": MAX_JSON_DEPTH}],
        )


def check_safetensors_header(path: Path) -> None:
    """If ``path`` looks like safetensors (a length, then ``{``), bounds its header's depth.

    Other files pass untouched: format detection decides what they are.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
        if len(head) < 9 or head[8:9] != b"{":
            return
        (length,) = struct.unpack("<Q", head[:8])
        if not 2 <= length <= min(MAX_SAFETENSORS_HEADER, size - 8):
            return
        fh.seek(8)
        raw = fh.read(length)
    check_json_depth(raw, what="the safetensors header")


def check_json_file(path: Path, *, what: str, max_bytes: int = MAX_SAFETENSORS_HEADER) -> None:
    """Bounds the depth of a JSON file's first ``max_bytes`` (a config.json part)."""
    with open(path, "rb") as fh:
        check_json_depth(fh.read(max_bytes), what=what)
