"""Reading untrusted archives and compressed files without letting them escape or explode.

Nothing is ever extracted to disk: members are read into memory one at a time, after every entry
of the archive has passed the checks below. An archive is refused outright when one entry is an
absolute path, climbs out with ``..``, is a symlink or encrypted, or when the entry count, the
declared uncompressed total or a member's compression ratio (a zip bomb) exceeds the limits.
``zipfile`` never yields more bytes than a member declares, so the declared total is a real bound.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nncompress.datasets.errors import DatasetError

__all__ = ["ArchiveLimits", "check_zip", "read_bounded", "read_member", "sha256_of"]

_GZIP_MAGIC = b"\x1f\x8b"
_DRIVE = re.compile(r"^[A-Za-z]:")
# Ratio checks only apply to members big enough to matter; a tiny file may compress 1000:1 honestly.
_RATIO_MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """What an uploaded archive may contain.

    Attributes:
        max_entries: members in a zip (directories included).
        max_total_bytes: declared uncompressed bytes of all members together; also the cap on a
            decompressed gzip file.
        max_ratio: uncompressed / compressed size of one member (members over 1 MiB).
        max_image_pixels: width × height of one image.
        max_decoded_bytes: bytes of all decoded images together.
    """

    max_entries: int = 200_000
    max_total_bytes: int = 1 << 30
    max_ratio: float = 200.0
    max_image_pixels: int = 4096 * 4096
    max_decoded_bytes: int = 1 << 30


def sha256_of(*paths: Path) -> str:
    """Hex sha256 of one file, or of the joined hex digests of several (order matters)."""
    digests = []
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digests.append(h.hexdigest())
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def check_zip(zf: zipfile.ZipFile, limits: ArchiveLimits) -> list[zipfile.ZipInfo]:
    """Checks every entry of an open zip against the safety rules and limits.

    Args:
        zf: the archive.
        limits: the limits.

    Returns:
        The file (non-directory) entries, in archive order.

    Raises:
        DatasetError: naming the first offending entry, or the limit exceeded.
    """
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise DatasetError(
            f"the archive has {len(infos)} entries; at most {limits.max_entries} are allowed",
            expected=limits.max_entries,
            got=len(infos),
        )
    total = 0
    files = []
    for info in infos:
        _check_name(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DatasetError(
                f"entry {info.filename!r} is a symbolic link; links are refused", entry=info.filename
            )
        if info.flag_bits & 0x1:
            raise DatasetError(f"entry {info.filename!r} is encrypted", entry=info.filename)
        total += info.file_size
        if total > limits.max_total_bytes:
            raise DatasetError(
                f"the archive unpacks to more than {limits.max_total_bytes} bytes",
                entry=info.filename,
                expected=limits.max_total_bytes,
                got=total,
            )
        if info.file_size >= _RATIO_MIN_BYTES:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise DatasetError(
                    f"entry {info.filename!r} expands {ratio:.0f}x ({info.compress_size} -> {info.file_size} "
                    f"bytes); at most {limits.max_ratio:.0f}x is allowed (zip bomb?)",
                    entry=info.filename,
                    expected=limits.max_ratio,
                    got=round(ratio, 1),
                )
        if not info.is_dir():
            files.append(info)
    return files


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The bytes of one checked member (never more than it declares).

    Raises:
        DatasetError: the member is corrupt (bad CRC, truncated, unknown compression).
    """
    try:
        with zf.open(info) as f:
            return f.read(info.file_size)
    except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError) as exc:
        raise DatasetError(f"entry {info.filename!r} cannot be read: {exc}", entry=info.filename) from exc


def read_bounded(path: Path, limit: int) -> bytes:
    """Reads a raw or gzip-compressed file, refusing to decompress more than ``limit`` bytes.

    Raises:
        DatasetError: the file is larger than ``limit`` once decompressed, or the gzip is corrupt.
    """
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
    try:
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as f:
            data = f.read(limit + 1)
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path.name}: cannot decompress ({exc})", file=path.name) from exc
    if len(data) > limit:
        raise DatasetError(
            f"{path.name} unpacks to more than {limit} bytes",
            file=path.name,
            expected=limit,
            got=f"> {limit}",
        )
    return data


def _check_name(name: str) -> None:
    bad = None
    if "\x00" in name:
        bad = "contains a NUL byte"
    elif name.startswith(("/", "\\")) or _DRIVE.match(name):
        bad = "is an absolute path"
    elif "\\" in name:
        bad = "uses backslashes (a Windows path that may hide '..')"
    elif ".." in PurePosixPath(name).parts:
        bad = "climbs out of the archive with '..'"
    if bad:
        raise DatasetError(f"entry {name!r} {bad}; refused", entry=name)
