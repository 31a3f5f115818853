"""The array formats: ``.npz`` (``x``/``y``) and the MNIST idx files (gzip or raw).

Both read into numpy arrays and leave validation to :func:`nncompress.datasets.core.from_arrays`.
An ``.npz`` is a zip, so it passes the same archive checks as an ImageFolder upload, and it is read
with ``allow_pickle=False``: an object (ragged) array is refused, never unpickled.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nncompress.datasets.archive import ArchiveLimits, check_zip, read_bounded, read_member
from nncompress.datasets.errors import DatasetError

__all__ = ["read_idx", "read_npz"]

# Accepted array names: NNI/numpy habit first, then the names the shipped MNIST subset uses.
_KEY_PAIRS = (("x", "y"), ("images", "labels"))

# idx type codes (http://yann.lecun.com/exdb/mnist/): code -> big-endian dtype.
_IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_npz(path: Path, limits: ArchiveLimits) -> tuple[np.ndarray, np.ndarray]:
    """Reads ``x`` and ``y`` (or ``images`` and ``labels``) from an ``.npz``.

    Args:
        path: the file.
        limits: archive limits (an npz is a zip).

    Returns:
        ``(x, y)`` as stored.

    Raises:
        DatasetError: not a valid npz, an array missing, or an object array.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path.name} is not a valid .npz (zip) file: {exc}", file=path.name) from exc
    with zf:
        members = {info.filename.removesuffix(".npy"): info for info in check_zip(zf, limits)}
        pair = next((p for p in _KEY_PAIRS if p[0] in members and p[1] in members), None)
        if pair is None:
            raise DatasetError(
                f"the npz must hold arrays 'x' and 'y' (or 'images' and 'labels'); found: "
                f"{', '.join(sorted(members)) or 'nothing'}",
                array="x",
                expected=["x", "y"],
                got=sorted(members),
            )
        return tuple(_read_npy(zf, members[name], name) for name in pair)  # type: ignore[return-value]


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    data = read_member(zf, info)
    try:
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DatasetError(
                f"{name} is an object array (ragged samples or Python objects); every sample must be "
                "a numeric array of the same shape",
                array=name,
                expected="numeric array",
                got="object",
            ) from exc
        raise DatasetError(f"{name}: not a valid .npy array ({exc})", array=name) from exc
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{name}: not a valid .npy array ({exc})", array=name) from exc


def read_idx(path: Path, limits: ArchiveLimits) -> np.ndarray:
    """Reads one idx file (MNIST's format), gzip-compressed or raw.

    Args:
        path: the file.
        limits: ``max_total_bytes`` caps the decompressed size.

    Returns:
        The array, with the dimensions its header declares.

    Raises:
        DatasetError: bad magic, unknown type code, or a length that does not match the header.
    """
    data = read_bounded(path, limits.max_total_bytes)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(
            f"{path.name} is not an idx file (its first bytes are {data[:4].hex() or 'missing'}, "
            "expected 0000 then a type code and the number of dimensions)",
            file=path.name,
        )
    dtype = _IDX_TYPES.get(data[2])
    if dtype is None:
        raise DatasetError(f"{path.name}: unknown idx type code 0x{data[2]:02x}", file=path.name, got=data[2])
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DatasetError(f"{path.name}: truncated idx header ({ndim} dimensions)", file=path.name)
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetError(
            f"{path.name}: header declares {dims} ({expected} bytes of data) but the file holds "
            f"{len(data) - header} bytes",
            file=path.name,
            expected=expected,
            got=len(data) - header,
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
