"""The array formats: ``.npz`` (``x``/``y``) and the MNIST idx files (gzip or raw).

Both are read in two steps: the array's header (dtype, shape) first, checked against the
:class:`~nncompress.datasets.limits.DatasetLimits` before a byte of data is decompressed, then the
data as a stream of flat chunks, never more than the header declared. The loader fills one array
from those chunks; the API's streaming validation checks each chunk and drops it. An ``.npz`` is a
zip, so it passes the same archive checks as an ImageFolder upload; its ``.npy`` headers are read
with numpy's header reader, and an object (pickled) array is refused by its header, never loaded.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from nncompress.datasets.archive import is_gzip, open_maybe_gzip, open_member
from nncompress.datasets.errors import DatasetError
from nncompress.datasets.limits import FLOAT_BYTES, DatasetLimits

__all__ = ["StoredArray", "idx_array", "npz_arrays", "read_stored"]

# Accepted array names: NNI/numpy habit first, then the names the shipped MNIST subset uses.
_KEY_PAIRS = (("x", "y"), ("images", "labels"))
_CHUNK_BYTES = 1 << 20

# idx type codes (http://yann.lecun.com/exdb/mnist/): code -> big-endian dtype.
_IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# What a corrupt gzip or zip member raises while it is read.
_STREAM_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile)


@dataclass(frozen=True)
class StoredArray:
    """An array in a file, known by its header: where its data starts, and how to stream it.

    Attributes:
        name: what messages call it (the npz member's name, or the idx file's).
        dtype: the stored dtype (an idx file's is big-endian).
        shape: the declared shape.
        fortran: column-major storage (an ``.npy`` may be).
        offset: bytes before the data, in the (decompressed) stream.
        open: opens the (decompressed) stream at its start.
    """

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    fortran: bool
    offset: int
    open: Callable[[], AbstractContextManager[IO[bytes]]]

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize

    def check_limits(self, limits: DatasetLimits, **where: Any) -> None:
        """Refuses more samples, or more float32 bytes, than the limits allow (from the header alone)."""
        samples = self.shape[0] if self.shape else 0
        limits.check("max_samples", samples, f"the number of samples in {self.name}", **where)
        limits.check("max_decoded_bytes", self.count * FLOAT_BYTES, f"{self.name} as float32", **where)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """The data as ``(position, flat values)`` runs in storage order, native byte order.

        Raises:
            DatasetError: the stream is corrupt, or holds fewer or more bytes than the header declares.
        """
        itemsize = self.dtype.itemsize
        step = max(1, _CHUNK_BYTES // itemsize) * itemsize
        native = self.dtype.newbyteorder("=")
        got = 0
        try:
            with self.open() as f:
                f.read(self.offset)
                while got < self.nbytes:
                    data = f.read(min(step, self.nbytes - got))
                    if len(data) % itemsize or not data:
                        got += len(data)
                        break
                    yield got // itemsize, np.frombuffer(data, dtype=self.dtype).astype(native, copy=False)
                    got += len(data)
                extra = got == self.nbytes and f.read(1) != b""
        except _STREAM_ERRORS as exc:
            raise DatasetError(f"{self.name}: cannot decompress ({exc})", array=self.name) from exc
        if got != self.nbytes or extra:
            holds = f"more than {self.nbytes}" if extra else str(got)
            raise DatasetError(
                f"{self.name}: header declares {list(self.shape)} ({self.nbytes} bytes of data) but the file "
                f"holds {holds} bytes",
                array=self.name,
                expected=self.nbytes,
                got=holds if extra else got,
            )


def read_stored(array: StoredArray) -> np.ndarray:
    """The whole array, read from its chunks into one buffer (its header was checked first)."""
    out = np.empty(array.count, dtype=array.dtype.newbyteorder("="))
    for start, chunk in array.chunks():
        out[start : start + chunk.size] = chunk
    return out.reshape(array.shape, order="F" if array.fortran else "C")


# -- idx --------------------------------------------------------------------------------------------


def idx_array(path: Path, limits: DatasetLimits) -> StoredArray:
    """Reads an idx file's header (gzip or raw) and checks it against the limits.

    Args:
        path: the file.
        limits: samples, decoded bytes and, for a gzip file, the ratio of declared data to file size.

    Returns:
        The array, ready to stream.

    Raises:
        DatasetError: bad magic, unknown type code, a truncated header, a corrupt gzip, or a limit.
    """
    try:
        with open_maybe_gzip(path) as f:
            head = f.read(4)
            ndim = head[3] if len(head) == 4 else 0
            dims_bytes = f.read(4 * ndim)
    except _STREAM_ERRORS as exc:
        raise DatasetError(f"{path.name}: cannot decompress ({exc})", file=path.name) from exc
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DatasetError(
            f"{path.name} is not an idx file (its first bytes are {head.hex() or 'missing'}, "
            "expected 0000 then a type code and the number of dimensions)",
            file=path.name,
        )
    dtype = _IDX_TYPES.get(head[2])
    if dtype is None:
        raise DatasetError(f"{path.name}: unknown idx type code 0x{head[2]:02x}", file=path.name, got=head[2])
    if ndim == 0 or len(dims_bytes) < 4 * ndim:
        raise DatasetError(f"{path.name}: truncated idx header ({ndim} dimensions)", file=path.name)
    dims = tuple(int.from_bytes(dims_bytes[4 * i : 4 * i + 4], "big") for i in range(ndim))
    array = StoredArray(
        name=path.name,
        dtype=dtype,
        shape=dims,
        fortran=False,
        offset=4 + 4 * ndim,
        open=lambda: open_maybe_gzip(path),
    )
    array.check_limits(limits, file=path.name)
    if is_gzip(path):
        limits.check_ratio(array.nbytes, path.stat().st_size, path.name, file=path.name)
    return array


# -- npz --------------------------------------------------------------------------------------------


def npz_arrays(
    zf: zipfile.ZipFile, files: list[zipfile.ZipInfo], limits: DatasetLimits
) -> tuple[StoredArray, StoredArray]:
    """Finds ``x`` and ``y`` (or ``images`` and ``labels``) in an open, checked ``.npz`` and reads
    their headers.

    Raises:
        DatasetError: an array missing, an object (pickled) array, a header that does not match the
            member's size, or a limit.
    """
    members = {info.filename.removesuffix(".npy"): info for info in files}
    pair = next((p for p in _KEY_PAIRS if p[0] in members and p[1] in members), None)
    if pair is None:
        raise DatasetError(
            f"the npz must hold arrays 'x' and 'y' (or 'images' and 'labels'); found: "
            f"{', '.join(sorted(members)) or 'nothing'}",
            array="x",
            expected=["x", "y"],
            got=sorted(members),
        )
    x, y = (_npy_array(zf, members[name], name) for name in pair)
    x.check_limits(limits, array=x.name)
    y.check_limits(limits, array=y.name)
    return x, y


def _npy_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> StoredArray:
    try:
        with open_member(zf, info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise DatasetError(f"{name}: .npy format version {version} is not supported", array=name)
            offset = f.tell()
    except DatasetError:
        raise
    except (ValueError, *_STREAM_ERRORS) as exc:
        raise DatasetError(f"{name}: not a valid .npy array ({exc})", array=name) from exc
    if dtype.hasobject:
        raise DatasetError(
            f"{name} is an object array (ragged samples or Python objects); every sample must be "
            "a numeric array of the same shape",
            array=name,
            expected="numeric array",
            got="object",
        )
    if dtype.itemsize == 0 or any(int(d) < 0 for d in shape):
        # numpy's header reader lets both through; neither can hold samples (nor be streamed).
        raise DatasetError(
            f"{name}: not a valid .npy array (shape {list(shape)}, dtype {dtype})", array=name, got=str(dtype)
        )
    array = StoredArray(
        name=name,
        dtype=dtype,
        shape=tuple(int(d) for d in shape),
        fortran=bool(fortran),
        offset=offset,
        open=lambda: open_member(zf, info),
    )
    if offset + array.nbytes != info.file_size:
        raise DatasetError(
            f"{name}: not a valid .npy array (its header declares {list(array.shape)} {dtype}, "
            f"{array.nbytes} bytes of data, but the member holds {info.file_size - offset})",
            array=name,
            expected=array.nbytes,
            got=info.file_size - offset,
        )
    return array
