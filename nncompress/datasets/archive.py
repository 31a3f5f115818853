"""Reading untrusted archives and compressed files without letting them escape or explode.

Nothing is ever extracted to disk, and nothing is read whole: members are opened as streams, after
every entry of the archive has passed the checks below. An archive is refused outright when one
entry is an absolute path, climbs out with ``..``, is a symlink or encrypted, or when the entry
count, the declared uncompressed total or a member's compression ratio (a zip bomb) exceeds the
limits. ``zipfile`` never yields more bytes than a member declares, so the declared total is a real
bound.

``zipfile`` holds the whole central directory in memory (about 0.5 KiB an entry), and it counts the
entries by walking the directory, not by the count the archive declares; so before it opens an
archive, :func:`open_zip` walks the directory itself, a record at a time, and refuses it when it
holds more entries than allowed. That is a few dozen lines of hand-written parsing, kept because it
is what bounds the memory an upload can cost the API.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import stat
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, cast

from nncompress.datasets.errors import DatasetError
from nncompress.datasets.limits import DatasetLimits

__all__ = [
    "check_directory",
    "check_zip",
    "is_gzip",
    "open_maybe_gzip",
    "open_member",
    "open_zip",
    "sha256_of",
]

_GZIP_MAGIC = b"\x1f\x8b"
_DRIVE = re.compile(r"^[A-Za-z]:")
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL_HEADER = 46  # fixed part of a central directory record
# Directory bytes allowed per allowed entry: a record is 46 bytes plus its name and extra fields
# (a 60-character path with the usual timestamp fields is about 130).
_DIRECTORY_BYTES_PER_ENTRY = 256


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


@contextmanager
def open_zip(path: Path, limits: DatasetLimits) -> Iterator[tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]]:
    """Opens an uploaded zip once its directory and every entry passed the checks.

    Yields:
        ``(zip, file entries)``: the open archive and its non-directory entries, in archive order.

    Raises:
        DatasetError: not a zip, an unsafe entry, or a limit exceeded (:class:`DatasetLimitError`).
    """
    check_directory(path, limits)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DatasetError(f"{path.name} is not a valid zip file: {exc}", file=path.name) from exc
    with zf:
        yield zf, check_zip(zf, limits)


def check_directory(path: Path, limits: DatasetLimits) -> None:
    """Counts a zip's central directory records without building them; refuses too many (or too large).

    Call it before ``zipfile.ZipFile(path)``, which builds every record. A file that is not a zip
    passes (``zipfile`` then says what is wrong).
    """
    cap = limits.max_archive_entries
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        tail_at = max(0, size - _EOCD.size - 0xFFFF)
        f.seek(tail_at)
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < _EOCD.size:
            return  # not a zip: zipfile says so in its own words
        _, _, _, _, declared, cd_size, _, _ = _EOCD.unpack_from(tail, at)
        end = tail_at + at
        if at >= _ZIP64_LOCATOR.size and tail[at - _ZIP64_LOCATOR.size : at - _ZIP64_LOCATOR.size + 4] == (
            b"PK\x06\x07"
        ):
            _, _, zip64_at, _ = _ZIP64_LOCATOR.unpack_from(tail, at - _ZIP64_LOCATOR.size)
            f.seek(zip64_at)
            record = f.read(_ZIP64_EOCD.size)
            if len(record) == _ZIP64_EOCD.size and record[:4] == b"PK\x06\x06":
                declared, cd_size = _ZIP64_EOCD.unpack(record)[7:9]
                end = zip64_at
        limits.check("max_archive_entries", declared, "the number of entries the archive declares")
        limits.check(
            "max_archive_entries",
            cd_size // _DIRECTORY_BYTES_PER_ENTRY,
            f"its directory of {cd_size} bytes, at {_DIRECTORY_BYTES_PER_ENTRY} bytes an entry,",
        )
        f.seek(max(0, end - cd_size))
        directory = f.read(cd_size)
    count, pos = 0, 0
    while pos + _CENTRAL_HEADER <= len(directory) and directory[pos : pos + 4] == b"PK\x01\x02":
        name, extra, comment = struct.unpack_from("<3H", directory, pos + 28)
        pos += _CENTRAL_HEADER + name + extra + comment
        count += 1
        if count > cap:
            limits.check("max_archive_entries", count, "the number of entries in the archive (at least)")


def check_zip(zf: zipfile.ZipFile, limits: DatasetLimits) -> list[zipfile.ZipInfo]:
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
    limits.check("max_archive_entries", len(infos), "the number of entries in the archive")
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
        limits.check(
            "max_unpacked_bytes",
            total,
            f"the archive's unpacked size up to entry {info.filename!r}",
            entry=info.filename,
        )
        limits.check_ratio(
            info.file_size, info.compress_size, f"entry {info.filename!r}", entry=info.filename
        )
        if not info.is_dir():
            files.append(info)
    return files


def open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    """A checked member as a stream (never more bytes than it declares).

    Raises:
        DatasetError: the member cannot be opened (unknown compression, bad local header).
    """
    try:
        return zf.open(info)
    except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError, ValueError) as exc:
        raise DatasetError(f"entry {info.filename!r} cannot be read: {exc}", entry=info.filename) from exc


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as raw:
        return raw.read(2) == _GZIP_MAGIC


def open_maybe_gzip(path: Path) -> IO[bytes]:
    """The file's content as a stream, decompressed on the fly when it is gzip."""
    if is_gzip(path):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def _check_name(name: str) -> None:
    bad = None
    if not PurePosixPath(name).parts:
        bad = "has no name"
    elif "\x00" in name:
        bad = "contains a NUL byte"
    elif name.startswith(("/", "\\")) or _DRIVE.match(name):
        bad = "is an absolute path"
    elif "\\" in name:
        bad = "uses backslashes (a Windows path that may hide '..')"
    elif ".." in PurePosixPath(name).parts:
        bad = "climbs out of the archive with '..'"
    if bad:
        raise DatasetError(f"entry {name!r} {bad}; refused", entry=name)
